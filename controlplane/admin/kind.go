package admin

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// resource is a config message kept in a list and identified by its name field.
type resource interface {
	proto.Message
	GetName() string
}

// kind describes one named resource list of the config, so that its list, get, create,
// update and delete calls are written once. Its zero value is not usable.
type kind[T resource] struct {
	name  string // in messages, e.g. "upstream group"
	rpc   string // in RPC names, e.g. "UpstreamGroup" (CreateUpstreamGroup…)
	field string // the request field holding one, e.g. "upstream_group"
	path  string // the config path of the list, e.g. "upstream_groups"
	items func(c *configv1.Config) []T
	// setItems stores the list, creating its parents when they are nil.
	setItems func(c *configv1.Config, items []T)
	// redact returns a copy of one item with its secrets redacted.
	redact func(T) T
	// users returns what references the named item; nil when nothing can.
	users func(c *configv1.Config, name string) []user
}

var (
	upstreams = kind[*configv1.Upstream]{
		name: ResourceUpstream, rpc: "Upstream", field: "upstream", path: "upstreams",
		items:    (*configv1.Config).GetUpstreams,
		setItems: func(c *configv1.Config, us []*configv1.Upstream) { c.Upstreams = us },
		redact:   redact.Message[*configv1.Upstream],
		users:    upstreamUsers,
	}
	upstreamGroups = kind[*configv1.UpstreamGroup]{
		name: ResourceUpstreamGroup, rpc: "UpstreamGroup", field: "upstream_group", path: "upstream_groups",
		items:    (*configv1.Config).GetUpstreamGroups,
		setItems: func(c *configv1.Config, gs []*configv1.UpstreamGroup) { c.UpstreamGroups = gs },
		redact:   redact.Message[*configv1.UpstreamGroup],
		users:    groupUsers,
	}
	forwards = kind[*configv1.Forward]{
		name: ResourceForward, rpc: "Forward", field: "forward", path: "http_server.forwards",
		items: func(c *configv1.Config) []*configv1.Forward { return c.GetHttpServer().GetForwards() },
		setItems: func(c *configv1.Config, fs []*configv1.Forward) {
			if c.HttpServer == nil {
				c.HttpServer = &configv1.HttpServer{}
			}
			c.HttpServer.Forwards = fs
		},
		redact: redact.Message[*configv1.Forward],
		users:  forwardUsers,
	}
)

// find returns the index of the item called name in c, or -1.
func (k kind[T]) find(c *configv1.Config, name string) int {
	for i, it := range k.items(c) {
		if it.GetName() == name {
			return i
		}
	}
	return -1
}

// stored returns the redacted item called name in c, or nil.
func (k kind[T]) stored(c *configv1.Config, name string) T {
	if i := k.find(c, name); i >= 0 {
		return k.redact(k.items(c)[i])
	}
	var zero T
	return zero
}

// at rewrites the config path of item i to the request field.
func (k kind[T]) at(i int) pathRewrite {
	return pathRewrite{fmt.Sprintf("%s[%d]", k.path, i), k.field}
}

// list returns the revision and every item, secrets redacted.
func (k kind[T]) list(ctx context.Context, s *Server) (uint64, []T, error) {
	rev, cfg, err := s.load(ctx, "list "+k.name+"s")
	if err != nil {
		return 0, nil, err
	}
	return rev, k.items(cfg), nil
}

// get returns the item called name, secrets redacted.
func (k kind[T]) get(ctx context.Context, s *Server, name string) (T, error) {
	var zero T
	_, cfg, err := s.load(ctx, "get "+k.name)
	if err != nil {
		return zero, err
	}
	i := k.find(cfg, name)
	if i < 0 {
		return zero, notFound(k.name, name)
	}
	return k.items(cfg)[i], nil
}

// create appends in, whose name must be new, and returns the write's result and the
// stored item, secrets redacted.
func (k kind[T]) create(ctx context.Context, s *Server, in T, req writeRequest) (result, T, error) {
	var zero T
	if !in.ProtoReflect().IsValid() {
		return result{}, zero, invalidField(k.field, "required")
	}
	w, err := newWrite("Create"+k.rpc, req)
	if err != nil {
		return result{}, zero, err
	}
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		if in.GetName() != "" && k.find(next, in.GetName()) >= 0 {
			return pathRewrite{}, status.Errorf(codes.AlreadyExists, "%s %q already exists", k.name, in.GetName())
		}
		items := append(k.items(next), proto.Clone(in).(T))
		k.setItems(next, items)
		return k.at(len(items) - 1), nil
	})
	if err != nil {
		return result{}, zero, err
	}
	setHeaders(ctx, r.rev, r.httpCode(201))
	return r, k.stored(r.stored, in.GetName()), nil
}

// update replaces the item called name whole with in, whose name must be empty or name.
func (k kind[T]) update(ctx context.Context, s *Server, name string, in T, req writeRequest) (result, T, error) {
	var zero T
	if !in.ProtoReflect().IsValid() {
		return result{}, zero, invalidField(k.field, "required")
	}
	if err := matchName(k.field+".name", in.GetName(), name); err != nil {
		return result{}, zero, err
	}
	w, err := newWrite("Update"+k.rpc, req)
	if err != nil {
		return result{}, zero, err
	}
	in = proto.Clone(in).(T)
	setName(in, name)
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		i := k.find(next, name)
		if i < 0 {
			return pathRewrite{}, notFound(k.name, name)
		}
		k.items(next)[i] = in
		return k.at(i), nil
	})
	if err != nil {
		return result{}, zero, err
	}
	setHeaders(ctx, r.rev, 0)
	return r, k.stored(r.stored, name), nil
}

// delete removes the item called name, refusing when something uses it.
func (k kind[T]) delete(ctx context.Context, s *Server, name string, req writeRequest) (result, error) {
	w, err := newWrite("Delete"+k.rpc, req)
	if err != nil {
		return result{}, err
	}
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		i := k.find(next, name)
		if i < 0 {
			return pathRewrite{}, notFound(k.name, name)
		}
		if k.users != nil {
			if err := inUse(fmt.Sprintf("%s %q", k.name, name), k.users(next, name)); err != nil {
				return pathRewrite{}, err
			}
		}
		items := k.items(next)
		k.setItems(next, append(items[:i], items[i+1:]...))
		return pathRewrite{}, nil
	})
	if err != nil {
		return result{}, err
	}
	setHeaders(ctx, r.rev, r.httpCode(204))
	return r, nil
}

// setName sets the name field of m.
func setName(m resource, name string) {
	r := m.ProtoReflect()
	r.Set(r.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString(name))
}
