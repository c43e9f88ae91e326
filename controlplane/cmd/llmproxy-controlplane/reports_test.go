package main

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/controlplane/xds"
	"github.com/llmproxy-go/llmproxy/e2e/pki"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// startReportService serves the report service set up as the control plane does, with the
// ADS server's options, on a loopback port, and returns the address.
func startReportService(t *testing.T, opts xds.Options, extra ...grpc.ServerOption) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := xds.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(extra...)
	_, stop, err := setupReports(ctx, gs, st, srv, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return l.Addr().String()
}

// sendReport opens a report stream to addr with creds, sends one report of node and
// closes the stream; it returns the stream's status.
func sendReport(t *testing.T, ctx context.Context, addr string, creds credentials.TransportCredentials, node string) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := reportv1.NewReportServiceClient(conn).StreamReports(ctx)
	if err != nil {
		return err
	}
	_ = s.Send(&reportv1.ProxyReport{NodeId: node, Interval: durationpb.New(time.Second), ReportInterval: durationpb.New(time.Second)})
	_, err = s.CloseAndRecv()
	return err
}

// TestReportStreamsFollowTheADSToken: the report service takes the ADS server's token
// rule, whatever sets it.
func TestReportStreamsFollowTheADSToken(t *testing.T) {
	addr := startReportService(t, xds.Options{Token: "ads-token"})
	ctx, plain := t.Context(), insecure.NewCredentials()
	if err := sendReport(t, ctx, addr, plain, "p1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("report stream without the ADS token: %v; want Unauthenticated", err)
	}
	if err := sendReport(t, metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong"), addr, plain, "p1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("report stream with a wrong token: %v; want Unauthenticated", err)
	}
	if err := sendReport(t, metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer ads-token"), addr, plain, "p1"); err != nil {
		t.Errorf("report stream with the ADS token: %v", err)
	}
}

// TestReportStreamsFollowTheADSCertificates: with client certificates required
// (--client-ca), a report stream needs one, and it must name the node reported for.
func TestReportStreamsFollowTheADSCertificates(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := pki.CAFor(t, "server-ca"), pki.CAFor(t, "client-ca")
	serverRoots, clientRoots := serverCA.Pool(), clientCA.Pool()
	addr := startReportService(t, xds.Options{RequireClientCert: true},
		grpc.Creds(credentials.NewTLS(tlsconfig.Server(serverCA.PairFor(t, dir, "cp", "cp", "127.0.0.1"), clientRoots))))
	p1 := clientCA.PairFor(t, dir, "p1", "p1")
	with := func(cert *tlsconfig.Pair) credentials.TransportCredentials {
		return credentials.NewTLS(tlsconfig.Client(serverRoots, cert))
	}
	if err := sendReport(t, t.Context(), addr, with(nil), "p1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("report stream without a client certificate: %v; want Unauthenticated", err)
	}
	if err := sendReport(t, t.Context(), addr, with(p1), "p2"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("p1's certificate reporting for p2: %v; want PermissionDenied", err)
	}
	if err := sendReport(t, t.Context(), addr, with(p1), "p1"); err != nil {
		t.Errorf("p1's certificate reporting for p1: %v", err)
	}
}
