package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
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

// GetUpstreamHealth returns every reporting proxy's view of one configured upstream and the
// fleet verdict.
func (s *Server) GetUpstreamHealth(ctx context.Context, req *adminv1.GetUpstreamHealthRequest) (*adminv1.UpstreamHealth, error) {
	r, err := s.reports()
	if err != nil {
		return nil, err
	}
	rev, cfg, err := s.store.Load(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, "get upstream health", err)
	}
	setHeaders(ctx, rev, 0)
	for _, u := range cfg.GetUpstreams() {
		if u.GetName() == req.GetName() {
			return r.UpstreamHealth(req.GetName()), nil
		}
	}
	return nil, notFound("upstream", req.GetName())
}

// ListUpstreamHealth returns the health of every configured upstream, in config order.
func (s *Server) ListUpstreamHealth(ctx context.Context, _ *adminv1.ListUpstreamHealthRequest) (*adminv1.ListUpstreamHealthResponse, error) {
	r, err := s.reports()
	if err != nil {
		return nil, err
	}
	rev, cfg, err := s.store.Load(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, "list upstream health", err)
	}
	setHeaders(ctx, rev, 0)
	out := &adminv1.ListUpstreamHealthResponse{Revision: rev}
	for _, u := range cfg.GetUpstreams() {
		out.Upstreams = append(out.Upstreams, r.UpstreamHealth(u.GetName()))
	}
	return out, nil
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
