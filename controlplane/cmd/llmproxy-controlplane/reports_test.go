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
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/xds"
	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// TestReportStreamsFollowTheADSToken: the report service takes the ADS server's token
// rule, whatever sets it.
func TestReportStreamsFollowTheADSToken(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := xds.New(ctx, xds.Options{Token: "ads-token"})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	_, stop, err := setupReports(ctx, gs, st, srv, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	defer gs.Stop()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := reportv1.NewReportServiceClient(conn)
	send := func(ctx context.Context) error {
		s, err := client.StreamReports(ctx)
		if err != nil {
			return err
		}
		_ = s.Send(&reportv1.ProxyReport{NodeId: "p1", Interval: durationpb.New(time.Second), ReportInterval: durationpb.New(time.Second)})
		_, err = s.CloseAndRecv()
		return err
	}
	if err := send(ctx); status.Code(err) != codes.Unauthenticated {
		t.Errorf("report stream without the ADS token: %v; want Unauthenticated", err)
	}
	if err := send(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("report stream with a wrong token: %v; want Unauthenticated", err)
	}
	if err := send(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer ads-token")); err != nil {
		t.Errorf("report stream with the ADS token: %v", err)
	}
}
