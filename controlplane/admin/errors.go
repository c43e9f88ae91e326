package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
)

// This file is the one place where errors become gRPC statuses. The REST façade turns the
// statuses into HTTP ones (see httpStatus in gateway.go).
//
//	duplicate name                              ALREADY_EXISTS
//	dangling reference, deletion of a used one  FAILED_PRECONDITION (the message names the users)
//	stale expected_revision (store.ErrConflict) ABORTED
//	bad field, path/body name mismatch          INVALID_ARGUMENT (the message names the field)
//	missing resource, revision not kept          NOT_FOUND
//	ApplyConfig deleting over half of a kind     FAILED_PRECONDITION (unless force)
//
// ApplyConfig is the exception: the whole config is the request, so any fault in it, a
// duplicate or a dangling reference included, is INVALID_ARGUMENT.

// toStatus maps an error returned by the store or by an update function to a gRPC status
// error. Status errors pass through unchanged.
func (s *Server) toStatus(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	s.log.ErrorContext(ctx, "admin call failed", "op", op, "err", err)
	return status.Error(codes.Internal, op+": "+err.Error())
}

// Resource types named by the ResourceInfo detail of NOT_FOUND statuses, so clients tell
// what is missing (a route, or the forward that should hold it) without reading messages.
const (
	ResourceUpstream      = "upstream"
	ResourceUpstreamGroup = "upstream group"
	ResourceForward       = "forward"
	ResourceConsumer      = "consumer"
	// ResourceRoute is a forward's route: ResourceName is its path, Owner the forward.
	ResourceRoute = "route"
	// ResourceRevision is a revision of the history: ResourceName is its number.
	ResourceRevision = "revision"
)

// notFound is the NOT_FOUND status for a missing resource, e.g. `upstream "a" not found`,
// with a ResourceInfo detail naming its type (one of the Resource constants) and name.
func notFound(kind, name string) error {
	return withResource(status.Newf(codes.NotFound, "%s %q not found", kind, name),
		&errdetails.ResourceInfo{ResourceType: kind, ResourceName: name})
}

// withResource attaches ri to st.
func withResource(st *status.Status, ri *errdetails.ResourceInfo) error {
	if d, err := st.WithDetails(ri); err == nil {
		return d.Err()
	}
	return st.Err()
}

// invalidField is an INVALID_ARGUMENT status naming one request field.
func invalidField(path, format string, args ...any) error {
	return fieldStatus(codes.InvalidArgument, []*validate.FieldError{{
		Path: path, Kind: validate.ErrInvalid, Msg: fmt.Sprintf(format, args...),
	}})
}

// fieldStatus builds a status whose message lists every field error ("; "-separated) and
// whose details carry them as BadRequest field violations.
func fieldStatus(code codes.Code, fes []*validate.FieldError) error {
	msgs := make([]string, 0, len(fes))
	for _, fe := range fes {
		msgs = append(msgs, fe.Error())
	}
	return withViolations(status.New(code, strings.Join(msgs, "; ")), fes).Err()
}

// withViolations attaches fes to st as BadRequest field violations.
func withViolations(st *status.Status, fes []*validate.FieldError) *status.Status {
	br := &errdetails.BadRequest{}
	for _, fe := range fes {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       fe.Path,
			Description: fe.Msg,
		})
	}
	if d, err := st.WithDetails(br); err == nil {
		return d
	}
	return st
}

// validationStatus turns the field errors of a resource write into a status: any plain
// invalid value makes it INVALID_ARGUMENT (the request itself needs fixing); otherwise a
// duplicate makes it ALREADY_EXISTS; otherwise (dangling references, resources in use) it is
// FAILED_PRECONDITION. With wholeConfig every fault is INVALID_ARGUMENT.
func validationStatus(fes []*validate.FieldError, wholeConfig bool) error {
	code := codes.FailedPrecondition
	if wholeConfig {
		code = codes.InvalidArgument
	} else {
		dup, invalid := false, false
		for _, fe := range fes {
			switch {
			case errors.Is(fe, validate.ErrReference), errors.Is(fe, validate.ErrInUse):
			case errors.Is(fe, validate.ErrDuplicate):
				dup = true
			default:
				invalid = true
			}
		}
		switch {
		case invalid:
			code = codes.InvalidArgument
		case dup:
			code = codes.AlreadyExists
		}
	}
	return fieldStatus(code, fes)
}

// pathRewrite maps the config path of the resource a request writes (e.g. "upstreams[3]")
// to the request field holding it (e.g. "upstream"), so messages name what the caller sent.
type pathRewrite struct{ from, to string }

// apply rewrites p when it starts with r.from at a path-element boundary.
func (r pathRewrite) apply(p string) string {
	if r.from == "" || !strings.HasPrefix(p, r.from) {
		return p
	}
	rest := p[len(r.from):]
	if rest != "" && rest[0] != '.' && rest[0] != '[' {
		return p
	}
	return r.to + rest
}

// rewriteAll applies r to the path of every field error, returning copies.
func rewriteAll(fes []*validate.FieldError, r pathRewrite) []*validate.FieldError {
	out := make([]*validate.FieldError, len(fes))
	for i, fe := range fes {
		c := *fe
		c.Path = r.apply(fe.Path)
		out[i] = &c
	}
	return out
}
