package admin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/diff"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Limits on what every write request carries.
const (
	// maxWait bounds a write's wait for the fleet.
	maxWait = 10 * time.Minute
	// maxMessageLen bounds a change message, in bytes.
	maxMessageLen = 4096
)

// writeRequest is what every write request carries besides its payload (and
// expected_revision, read by expectedRevision).
type writeRequest interface {
	proto.Message
	GetMessage() string
	GetWait() string
	GetDryRun() bool
}

// write is one write call: what it records, and how it is checked and answered.
type write struct {
	op       string // the RPC, recorded as the revision's operation
	expected *uint64
	message  string
	wait     time.Duration // zero: answer at once
	dryRun   bool
	// whole: the request is the whole config, so any fault in it is INVALID_ARGUMENT.
	whole bool
	// guard: refuse to delete more than half of the forwards, routes, upstreams or consumers at once.
	guard bool
}

// newWrite reads the common fields of req for the RPC op, checking them.
func newWrite(op string, req writeRequest) (write, error) {
	w := write{op: op, expected: expectedRevision(req), message: req.GetMessage(), dryRun: req.GetDryRun()}
	if len(w.message) > maxMessageLen {
		return w, invalidField("message", "%d bytes; at most %d", len(w.message), maxMessageLen)
	}
	if v := req.GetWait(); v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil || d <= 0:
			return w, invalidField("wait", "%q is not a positive duration such as \"10s\"", v)
		case d > maxWait:
			return w, invalidField("wait", "%s is longer than %s", v, maxWait)
		case w.dryRun:
			return w, invalidField("wait", "a dry run stores nothing to wait for")
		}
		w.wait = d
	}
	return w, nil
}

// expectedRevision returns the expected_revision field of req when it is set.
func expectedRevision(req proto.Message) *uint64 {
	m := req.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("expected_revision")
	if fd == nil || !m.Has(fd) {
		return nil
	}
	v := m.Get(fd).Uint()
	return &v
}

// result is the outcome of a write.
type result struct {
	// rev is the new revision; for a dry run or a no-op write, the current one.
	rev uint64
	// stored is the config written (or, in a dry run, that would be), secrets in clear.
	stored *configv1.Config
	dryRun bool
	diff   *adminv1.ConfigDiff
	// fleet is set when the write waited for the fleet.
	fleet *adminv1.Rollout
}

// httpCode is the REST status of a successful write: created (201 on a create, 204 on a
// delete) unless it was a dry run or waited for the fleet, which answer 200 with a body.
func (r result) httpCode(created int) int {
	if r.dryRun || (created == 204 && r.fleet != nil) {
		return 0
	}
	return created
}

// commit applies ch to the current config, checks the result and stores it as a new
// revision (a dry run only checks), recording w in the history. It returns the result with
// the diff against the previous revision and, when w asks to wait, the fleet's rollout.
func (s *Server) commit(ctx context.Context, w write, ch change) (result, error) {
	if w.dryRun {
		return s.preview(ctx, w, ch)
	}
	var (
		stored, prev *configv1.Config
		prevRev      uint64
	)
	change := store.Change{Operation: w.op, Message: w.message, Actor: actorOf(ctx)}
	rev, err := s.store.Update(ctx, w.expected, change, func(cur uint64, cfg *configv1.Config) (*configv1.Config, error) {
		next, err := check(cfg, w, ch)
		if err != nil {
			return nil, err
		}
		stored, prev, prevRev = next, cfg, cur
		return next, nil
	})
	if err != nil {
		return result{}, s.toStatus(ctx, w.op, err)
	}
	s.logCommit(ctx, w.op, prevRev, rev)
	r := result{
		rev:    rev,
		stored: stored,
		diff:   &adminv1.ConfigDiff{BaseRevision: prevRev, Revision: rev, Resources: diff.Configs(prev, stored)},
	}
	if w.wait > 0 {
		r.fleet = s.rollout(ctx, rev, w.wait)
	}
	return r, nil
}

// preview is commit's dry run: the same checks against the current revision, nothing
// stored. Its diff has revision 0 (the proposed config).
func (s *Server) preview(ctx context.Context, w write, ch change) (result, error) {
	rev, cur, err := s.store.Load(ctx)
	if err != nil {
		return result{}, s.toStatus(ctx, w.op, err)
	}
	if w.expected != nil && *w.expected != rev {
		return result{}, status.Errorf(codes.Aborted, "%s: expected revision %d, current is %d", w.op, *w.expected, rev)
	}
	next, err := check(cur, w, ch)
	if err != nil {
		return result{}, err
	}
	return result{
		rev:    rev,
		stored: next,
		dryRun: true,
		diff:   &adminv1.ConfigDiff{BaseRevision: rev, Resources: diff.Configs(cur, next)},
	}, nil
}

// check is everything a write must pass: the change applied with secrets restored and the
// whole result valid (prepare), and, when w guards, no mass deletion.
func check(cur *configv1.Config, w write, ch change) (*configv1.Config, error) {
	next, err := prepare(cur, w.whole, ch)
	if err != nil {
		return nil, err
	}
	if w.guard {
		if err := guardDeletions(cur, next); err != nil {
			return nil, err
		}
	}
	return next, nil
}

// guardDeletions refuses, with FAILED_PRECONDITION naming what would go, a config that
// deletes more than half of the forwards, the routes, the upstreams or the consumers of cur at once: the
// usual way a fleet is emptied is a truncated file. Consumers are guarded alike.
func guardDeletions(cur, next *configv1.Config) error {
	type set struct {
		what, path string
		names      func(*configv1.Config) []string
	}
	sets := []set{
		{"forwards", "http_server.forwards", func(c *configv1.Config) []string {
			var out []string
			for _, f := range c.GetHttpServer().GetForwards() {
				out = append(out, fmt.Sprintf("%q", f.GetName()))
			}
			return out
		}},
		{"routes", "http_server.forwards[].routing", func(c *configv1.Config) []string {
			var out []string
			for _, f := range c.GetHttpServer().GetForwards() {
				for _, r := range f.GetRouting() {
					out = append(out, fmt.Sprintf("%q in forward %q", r.GetPath(), f.GetName()))
				}
			}
			return out
		}},
		{"upstreams", "upstreams", func(c *configv1.Config) []string {
			var out []string
			for _, u := range c.GetUpstreams() {
				out = append(out, fmt.Sprintf("%q", u.GetName()))
			}
			return out
		}},
		// Under client_auth: required, a consumer deleted locks its clients out.
		{"consumers", "consumers", func(c *configv1.Config) []string {
			var out []string
			for _, cs := range c.GetConsumers() {
				out = append(out, fmt.Sprintf("%q", cs.GetName()))
			}
			return out
		}},
	}
	var (
		parts []string
		fes   []*validate.FieldError
	)
	for _, st := range sets {
		before := st.names(cur)
		kept := map[string]bool{}
		for _, n := range st.names(next) {
			kept[n] = true
		}
		var gone []string
		for _, n := range before {
			if !kept[n] {
				gone = append(gone, n)
			}
		}
		if len(gone)*2 <= len(before) {
			continue
		}
		list := nameList(gone)
		parts = append(parts, fmt.Sprintf("%d of %d %s (%s)", len(gone), len(before), st.what, list))
		fes = append(fes, &validate.FieldError{Path: st.path, Kind: validate.ErrInvalid, Msg: "would delete " + list})
	}
	if len(parts) == 0 {
		return nil
	}
	st := status.New(codes.FailedPrecondition, "the new config would delete "+strings.Join(parts, " and ")+
		": more than half at once, the usual sign of a truncated file; send force=true to apply it anyway")
	return withViolations(st, fes).Err()
}

// nameList joins names, eliding after the first 20.
func nameList(names []string) string {
	const show = 20
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}

// actorKey is the context key of the caller's name for the history.
type actorKey struct{}

// withActor returns ctx naming the caller for the history.
func withActor(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, actorKey{}, name)
}

// actorOf names the caller recorded in the history: the name the auth interceptor found
// ("admin" for the admin token), or "anonymous" when admin auth is off.
func actorOf(ctx context.Context) string {
	if name, ok := ctx.Value(actorKey{}).(string); ok && name != "" {
		return name
	}
	return "anonymous"
}
