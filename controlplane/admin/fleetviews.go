package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// FleetReports is the optional capability of a Fleet that also collects the proxies'
// reports (controlplane/fleet.Reports): the fleet views come from it. Without it the views
// answer UNIMPLEMENTED. Implementations must be safe for concurrent use.
type FleetReports interface {
	// UpstreamHealth returns every reporting proxy's view of the upstream name and the
	// fleet verdict; the caller has checked that the upstream exists.
	UpstreamHealth(name string) *adminv1.UpstreamHealth
	// Usage answers a usage request. Faults of the request are *validate.FieldError
	// (errors.Join) naming the request field.
	Usage(ctx context.Context, req *adminv1.GetUsageRequest) (*adminv1.GetUsageResponse, error)
}

// reports returns the fleet's report views, or UNIMPLEMENTED.
func (s *Server) reports() (FleetReports, error) {
	if r, ok := s.fleet.(FleetReports); ok {
		return r, nil
	}
	return nil, status.Error(codes.Unimplemented, "this control plane does not collect proxy reports")
}

// upstreamHealth loads the current config and calls view with the fleet's report views and
// it; op names the call in errors.
func (s *Server) upstreamHealth(ctx context.Context, op string, view func(FleetReports, uint64, *configv1.Config) error) error {
	r, err := s.reports()
	if err != nil {
		return err
	}
	rev, cfg, err := s.store.Load(ctx)
	if err != nil {
		return s.toStatus(ctx, op, err)
	}
	setHeaders(ctx, rev, 0)
	return view(r, rev, cfg)
}

// GetUpstreamHealth returns every reporting proxy's view of one configured upstream and the
// fleet verdict.
func (s *Server) GetUpstreamHealth(ctx context.Context, req *adminv1.GetUpstreamHealthRequest) (*adminv1.UpstreamHealth, error) {
	var out *adminv1.UpstreamHealth
	err := s.upstreamHealth(ctx, "get upstream health", func(r FleetReports, _ uint64, cfg *configv1.Config) error {
		for _, u := range cfg.GetUpstreams() {
			if u.GetName() == req.GetName() {
				out = r.UpstreamHealth(req.GetName())
				return nil
			}
		}
		return notFound("upstream", req.GetName())
	})
	return out, err
}

// ListUpstreamHealth returns the health of every configured upstream, in config order.
func (s *Server) ListUpstreamHealth(ctx context.Context, _ *adminv1.ListUpstreamHealthRequest) (*adminv1.ListUpstreamHealthResponse, error) {
	var out *adminv1.ListUpstreamHealthResponse
	err := s.upstreamHealth(ctx, "list upstream health", func(r FleetReports, rev uint64, cfg *configv1.Config) error {
		out = &adminv1.ListUpstreamHealthResponse{Revision: rev}
		for _, u := range cfg.GetUpstreams() {
			out.Upstreams = append(out.Upstreams, r.UpstreamHealth(u.GetName()))
		}
		return nil
	})
	return out, err
}

// GetUsage aggregates traffic and tokens by consumer, model or upstream over a window.
func (s *Server) GetUsage(ctx context.Context, req *adminv1.GetUsageRequest) (*adminv1.GetUsageResponse, error) {
	r, err := s.reports()
	if err != nil {
		return nil, err
	}
	resp, err := r.Usage(ctx, req)
	if errors.Is(err, validate.ErrInvalid) {
		return nil, fieldStatus(codes.InvalidArgument, validate.Errors(err))
	}
	if err != nil {
		return nil, s.toStatus(ctx, "get usage", err)
	}
	return resp, nil
}
