package report

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	reportv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/report/v1"
)

// sink is a ReportService that hands every report to a channel and, when token is set,
// wants it as a bearer token.
type sink struct {
	reportv1.UnimplementedReportServiceServer
	token   string
	reports chan *reportv1.ProxyReport
	closed  chan uint64 // reports received on a stream the proxy closed
}

func (s *sink) StreamReports(stream reportv1.ReportService_StreamReportsServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if got := md.Get("authorization"); s.token != "" && (len(got) != 1 || got[0] != "Bearer "+s.token) {
		return status.Error(codes.Unauthenticated, "bad token")
	}
	var n uint64
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			s.closed <- n
			return stream.SendAndClose(&reportv1.StreamReportsResponse{Received: n})
		}
		if err != nil {
			return err
		}
		n++
		s.reports <- r
	}
}

// serveSink serves a sink on addr ("127.0.0.1:0" for a new port) and returns the address
// and a stop func.
func serveSink(t *testing.T, s *sink, addr string) (string, func()) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	reportv1.RegisterReportServiceServer(gs, s)
	go gs.Serve(l)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			gs.Stop()
		}
	}
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

func newSink(token string) *sink {
	return &sink{token: token, reports: make(chan *reportv1.ProxyReport, 100), closed: make(chan uint64, 10)}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func next(t *testing.T, s *sink, within time.Duration) *reportv1.ProxyReport {
	t.Helper()
	select {
	case r := <-s.reports:
		return r
	case <-time.After(within):
		t.Fatalf("no report within %s", within)
		return nil
	}
}

func startReporter(t *testing.T, opts Options) (*Reporter, context.CancelFunc, <-chan struct{}) {
	t.Helper()
	rep, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return rep, cancel, done
}

func TestReporterSendsEveryIntervalWithToken(t *testing.T) {
	s := newSink("t0k")
	addr, _ := serveSink(t, s, "127.0.0.1:0")
	calls := 0
	startReporter(t, Options{
		Conn: dial(t, addr), NodeID: "p1", Token: "t0k", Interval: 100 * time.Millisecond,
		Revision: func() string { return "42" },
		Sources: []Source{SourceFunc(func(r *reportv1.ProxyReport) {
			calls++
			r.Upstreams = append(r.Upstreams, &reportv1.UpstreamReport{Name: "u"})
		})},
	})
	for want := uint64(1); want <= 3; want++ {
		r := next(t, s, 5*time.Second)
		if r.GetNodeId() != "p1" || r.GetSequence() != want || r.GetRevision() != "42" || r.GetTrigger() != reportv1.Trigger_TRIGGER_INTERVAL {
			t.Fatalf("report %d: %v; want node p1, sequence %d, revision 42, trigger interval", want, r, want)
		}
		if got := r.GetReportInterval().AsDuration(); got != 100*time.Millisecond {
			t.Errorf("report_interval %s; want 100ms", got)
		}
		if iv := r.GetInterval().AsDuration(); iv <= 0 {
			t.Errorf("interval %s; want positive", iv)
		}
		if len(r.GetUpstreams()) != 1 {
			t.Errorf("upstreams %v; want the source's section", r.GetUpstreams())
		}
	}
}

func TestReporterTriggerSendsAtOnce(t *testing.T) {
	s := newSink("")
	addr, _ := serveSink(t, s, "127.0.0.1:0")
	rep, _, _ := startReporter(t, Options{Conn: dial(t, addr), NodeID: "p1", Interval: 10 * time.Minute})
	rep.Trigger()
	r := next(t, s, 5*time.Second)
	if r.GetTrigger() != reportv1.Trigger_TRIGGER_BREAKER_CHANGE {
		t.Fatalf("trigger %v; want breaker change", r.GetTrigger())
	}
	// Triggers within the gap coalesce into one more report.
	rep.Trigger()
	rep.Trigger()
	rep.Trigger()
	r = next(t, s, 5*time.Second)
	if r.GetTrigger() != reportv1.Trigger_TRIGGER_BREAKER_CHANGE || r.GetSequence() != 2 {
		t.Fatalf("second report %v; want sequence 2 for the burst", r)
	}
	select {
	case extra := <-s.reports:
		t.Fatalf("a burst of triggers made another report: %v", extra)
	case <-time.After(3 * minTriggerGap):
	}
}

func TestReporterReconnectsAndFlushesTheLastReport(t *testing.T) {
	s := newSink("")
	addr, stop := serveSink(t, s, "127.0.0.1:0")
	_, cancel, done := startReporter(t, Options{
		Conn: dial(t, addr), NodeID: "p1", Interval: 100 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	next(t, s, 5*time.Second)
	stop() // the control plane goes away: reports are lost, the reporter keeps trying
	s2 := newSink("")
	serveSink(t, s2, addr)
	r := next(t, s2, 5*time.Second)
	if r.GetNodeId() != "p1" {
		t.Fatalf("after reconnecting: %v", r)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(FlushTimeout + 5*time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	// The stream was closed cleanly after the last report, which the sink received.
	select {
	case <-s2.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("stream not closed by the proxy after the last report")
	}
	var last *reportv1.ProxyReport
	for len(s2.reports) > 0 {
		last = <-s2.reports
	}
	if last == nil || last.GetSequence() <= r.GetSequence() {
		t.Fatalf("last report %v; want one made when the context ended (after sequence %d)", last, r.GetSequence())
	}
}

func TestReporterWithoutControlPlaneDoesNotBlock(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens
	rep, cancel, done := startReporter(t, Options{Conn: dial(t, addr), NodeID: "p1", Interval: 100 * time.Millisecond})
	for range 100 {
		rep.Trigger() // never blocks
	}
	cancel()
	select {
	case <-done:
	case <-time.After(FlushTimeout + 5*time.Second):
		t.Fatal("Run did not return within the flush timeout with no control plane")
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	conn := dial(t, "127.0.0.1:1")
	for _, o := range []Options{
		{NodeID: "p"},
		{Conn: conn},
		{Conn: conn, NodeID: "p", Interval: time.Millisecond},
		{Conn: conn, NodeID: "p", Interval: time.Hour},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
