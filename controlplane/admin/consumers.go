package admin

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/apikey"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Consumers are a named resource list like the others; their keys have operations of their
// own. A key is made here (apikey.New), answered once in clear, and stored as its hash only:
// nothing can show it again. Revoking a key removes it; rotating one adds a new key and
// gives the old one an expiry after the grace period. Each is one revision, so the answer's
// revision (and, with wait, its rollout) says when every proxy refuses a revoked key.

// ResourceKey is a consumer's API key: ResourceName is its id, Owner the consumer.
const ResourceKey = "key"

// maxGrace bounds a rotation's grace period.
const maxGrace = 366 * 24 * time.Hour

var consumers = kind[*configv1.Consumer]{
	name: ResourceConsumer, rpc: "Consumer", field: "consumer", path: "consumers",
	items:    (*configv1.Config).GetConsumers,
	setItems: func(c *configv1.Config, cs []*configv1.Consumer) { c.Consumers = cs },
	redact:   redact.Message[*configv1.Consumer],
}

// forwardUsers lists the consumers whose forwards allow-list names the forward.
func forwardUsers(c *configv1.Config, name string) []user {
	var out []user
	for i, cs := range c.GetConsumers() {
		for j, f := range cs.GetForwards() {
			if f == name {
				out = append(out, user{
					path: fmt.Sprintf("consumers[%d].forwards[%d]", i, j),
					desc: fmt.Sprintf("consumer %q", cs.GetName()),
				})
			}
		}
	}
	return out
}

// ListConsumers returns every consumer, key hashes redacted.
func (s *Server) ListConsumers(ctx context.Context, _ *adminv1.ListConsumersRequest) (*adminv1.ListConsumersResponse, error) {
	rev, cs, err := consumers.list(ctx, s)
	if err != nil {
		return nil, err
	}
	return &adminv1.ListConsumersResponse{Consumers: cs, Revision: rev}, nil
}

// GetConsumer returns one consumer, key hashes redacted.
func (s *Server) GetConsumer(ctx context.Context, req *adminv1.GetConsumerRequest) (*configv1.Consumer, error) {
	return consumers.get(ctx, s, req.GetName())
}

// CreateConsumer adds a consumer; its name must be new. Its keys, if any, are given as
// hashes (llmproxyctl key hash); CreateKey makes new ones.
func (s *Server) CreateConsumer(ctx context.Context, req *adminv1.CreateConsumerRequest) (*adminv1.ConsumerResponse, error) {
	r, c, err := consumers.create(ctx, s, req.GetConsumer(), req)
	if err != nil {
		return nil, err
	}
	return &adminv1.ConsumerResponse{Consumer: c, Revision: r.rev, DryRun: r.dryRun, Diff: r.diff, Fleet: r.fleet}, nil
}

// UpdateConsumer replaces a consumer whole; a key hash written back redacted keeps the
// stored hash of the key with the same id.
func (s *Server) UpdateConsumer(ctx context.Context, req *adminv1.UpdateConsumerRequest) (*adminv1.ConsumerResponse, error) {
	r, c, err := consumers.update(ctx, s, req.GetName(), req.GetConsumer(), req)
	if err != nil {
		return nil, err
	}
	return &adminv1.ConsumerResponse{Consumer: c, Revision: r.rev, DryRun: r.dryRun, Diff: r.diff, Fleet: r.fleet}, nil
}

// DeleteConsumer removes a consumer and with it every key it has.
func (s *Server) DeleteConsumer(ctx context.Context, req *adminv1.DeleteConsumerRequest) (*adminv1.DeleteResponse, error) {
	return deleted(consumers.delete(ctx, s, req.GetName(), req))
}

// keyNotFound is the NOT_FOUND status for a missing key of an existing consumer.
func keyNotFound(consumer, id string) error {
	return withResource(status.Newf(codes.NotFound, "key %q not found in consumer %q", id, consumer),
		&errdetails.ResourceInfo{ResourceType: ResourceKey, ResourceName: id, Owner: consumer})
}

func findKey(c *configv1.Consumer, id string) int {
	return slices.IndexFunc(c.GetKeys(), func(k *configv1.ConsumerKey) bool { return k.GetId() == id })
}

// consumerKey finds consumer name and its key id in cfg: their indexes (in cfg.Consumers,
// in its Keys), or the NOT_FOUND error naming whichever is missing.
func consumerKey(cfg *configv1.Config, name, id string) (i, j int, err error) {
	if i = consumers.find(cfg, name); i < 0 {
		return 0, 0, notFound(ResourceConsumer, name)
	}
	if j = findKey(cfg.Consumers[i], id); j < 0 {
		return 0, 0, keyNotFound(name, id)
	}
	return i, j, nil
}

// newKey is a key being added: its id is chosen inside the write (the store may run the
// change more than once), the key itself before it.
type newKey struct {
	consumer string
	id       string // requested; "" picks one
	chosen   string // the id the last run of the change gave it
	plain    string
	hash     string
}

func makeKey(consumer, id string) *newKey {
	k := &newKey{consumer: consumer, id: id, plain: apikey.New()}
	k.hash = apikey.Hash(k.plain)
	return k
}

// add appends the key to c, whose index in the config is i, with expiry expiresAt, and
// returns the config path of its expires_at field.
func (k *newKey) add(c *configv1.Consumer, expiresAt string) (string, error) {
	k.chosen = k.id
	if k.chosen == "" {
		k.chosen = apikey.NewID(func(id string) bool { return findKey(c, id) >= 0 })
	} else if findKey(c, k.chosen) >= 0 {
		return "", status.Errorf(codes.AlreadyExists, "key %q already exists in consumer %q", k.chosen, k.consumer)
	}
	c.Keys = append(c.Keys, &configv1.ConsumerKey{Id: k.chosen, Hash: k.hash, ExpiresAt: expiresAt})
	return fmt.Sprintf("keys[%d]", len(c.Keys)-1), nil
}

// response is the answer to a write that made k.
func (k *newKey) response(r result) *adminv1.KeyResponse {
	resp := &adminv1.KeyResponse{
		Consumer: consumers.stored(r.stored, k.consumer), Id: k.chosen, Revision: r.rev,
		DryRun: r.dryRun, Diff: r.diff, Fleet: r.fleet,
	}
	if !r.dryRun {
		resp.Key = k.plain
	}
	return resp
}

// CreateKey adds a new key to a consumer and answers it in clear, once. The key's id is
// the requested one (which must be new in the consumer) or a generated one.
func (s *Server) CreateKey(ctx context.Context, req *adminv1.CreateKeyRequest) (*adminv1.KeyResponse, error) {
	name := req.GetName()
	w, err := newWrite("CreateKey", req)
	if err != nil {
		return nil, err
	}
	k := makeKey(name, req.GetKey().GetId())
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		i := consumers.find(next, name)
		if i < 0 {
			return pathRewrite{}, notFound(ResourceConsumer, name)
		}
		p, err := k.add(next.Consumers[i], req.GetKey().GetExpiresAt())
		if err != nil {
			return pathRewrite{}, err
		}
		return pathRewrite{fmt.Sprintf("consumers[%d].%s", i, p), "key"}, nil
	})
	if err != nil {
		return nil, err
	}
	setHeaders(ctx, r.rev, r.httpCode(201))
	return k.response(r), nil
}

// RevokeKey removes a key from a consumer.
func (s *Server) RevokeKey(ctx context.Context, req *adminv1.RevokeKeyRequest) (*adminv1.DeleteResponse, error) {
	name, id := req.GetName(), req.GetId()
	w, err := newWrite("RevokeKey", req)
	if err != nil {
		return nil, err
	}
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		i, j, err := consumerKey(next, name, id)
		if err != nil {
			return pathRewrite{}, err
		}
		c := next.Consumers[i]
		c.Keys = slices.Delete(c.Keys, j, j+1)
		return pathRewrite{}, nil
	})
	if err == nil {
		setHeaders(ctx, r.rev, r.httpCode(204))
	}
	return deleted(r, err)
}

// RotateKey adds a new key to a consumer (answered in clear, once) and lets the old key
// expire after the grace period: its expires_at becomes now plus grace, or stays when it is
// earlier already. Without a grace period the old key is removed at once.
func (s *Server) RotateKey(ctx context.Context, req *adminv1.RotateKeyRequest) (*adminv1.KeyResponse, error) {
	name, id := req.GetName(), req.GetId()
	var grace time.Duration
	if g := req.GetRotation().GetGrace(); g != "" {
		d, err := time.ParseDuration(g)
		switch {
		case err != nil || d < 0:
			return nil, invalidField("rotation.grace", "%q is not a duration such as \"1h\"", g)
		case d > maxGrace:
			return nil, invalidField("rotation.grace", "%s is longer than %s", g, maxGrace)
		}
		grace = d
	}
	w, err := newWrite("RotateKey", req)
	if err != nil {
		return nil, err
	}
	k := makeKey(name, req.GetRotation().GetNewId())
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		i, j, err := consumerKey(next, name, id)
		if err != nil {
			return pathRewrite{}, err
		}
		c := next.Consumers[i]
		old := c.Keys[j]
		if grace == 0 {
			c.Keys = slices.Delete(c.Keys, j, j+1)
		} else {
			until := s.now().Add(grace).Truncate(time.Second).Add(time.Second).UTC()
			if t, err := time.Parse(time.RFC3339, old.GetExpiresAt()); err != nil || until.Before(t) {
				old.ExpiresAt = until.Format(time.RFC3339)
			}
		}
		p, err := k.add(c, "")
		if err != nil {
			return pathRewrite{}, err
		}
		return pathRewrite{fmt.Sprintf("consumers[%d].%s", i, p), "rotation"}, nil
	})
	if err != nil {
		return nil, err
	}
	setHeaders(ctx, r.rev, r.httpCode(201))
	return k.response(r), nil
}

// GetPricing returns the pricing list.
func (s *Server) GetPricing(ctx context.Context, _ *adminv1.GetPricingRequest) (*adminv1.PricingResponse, error) {
	rev, cfg, err := s.load(ctx, "get pricing")
	if err != nil {
		return nil, err
	}
	return &adminv1.PricingResponse{Pricing: cfg.GetPricing(), Revision: rev}, nil
}

// UpdatePricing replaces the pricing list whole.
func (s *Server) UpdatePricing(ctx context.Context, req *adminv1.UpdatePricingRequest) (*adminv1.PricingResponse, error) {
	prices := make([]*configv1.Price, len(req.GetPricing()))
	for i, p := range req.GetPricing() {
		prices[i] = proto.Clone(p).(*configv1.Price)
	}
	w, err := newWrite("UpdatePricing", req)
	if err != nil {
		return nil, err
	}
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		next.Pricing = prices
		return pathRewrite{}, nil
	})
	if err != nil {
		return nil, err
	}
	setHeaders(ctx, r.rev, 0)
	return &adminv1.PricingResponse{Pricing: r.stored.GetPricing(), Revision: r.rev, DryRun: r.dryRun, Diff: r.diff, Fleet: r.fleet}, nil
}
