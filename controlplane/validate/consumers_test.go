package validate

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"google.golang.org/protobuf/proto"
)

// withConsumer returns valid() with one consumer and one price.
func withConsumer() *configv1.Config {
	c := valid()
	c.HttpServer.Forwards[0].ClientAuth = "required"
	c.Consumers = []*configv1.Consumer{{
		Name:     "team-a",
		Keys:     []*configv1.ConsumerKey{{Id: "k1", Hash: FormatKeyHash(sha256.Sum256([]byte("llmp-one"))), ExpiresAt: "2030-01-02T03:04:05Z"}},
		Models:   []string{"gpt-4o*"},
		Forwards: []string{"main"},
		Limits: &configv1.ConsumerLimits{
			RequestsPerMinute: proto.Uint32(10), TokensPerMinute: proto.Uint64(1000), TokensPerDay: proto.Uint64(100000),
			MaxParallel: proto.Uint32(2), Budget: &configv1.Budget{Usd: 5, Period: "week"},
		},
		Labels: map[string]string{"team": "search"},
	}}
	c.Pricing = []*configv1.Price{{Model: "gpt-4o*", InputPerMillion: 2.5, OutputPerMillion: 10}}
	return c
}

func TestValidateConsumers(t *testing.T) {
	hashA := FormatKeyHash(sha256.Sum256([]byte("llmp-one")))
	tests := []struct {
		name   string
		mutate func(c *configv1.Config)
		want   []string
		kind   error
	}{
		{"valid", func(c *configv1.Config) {}, nil, nil},
		{"bad client_auth", func(c *configv1.Config) { c.HttpServer.Forwards[0].ClientAuth = "yes" },
			[]string{`http_server.forwards[0].client_auth: unknown client_auth "yes" (want off, optional or required)`}, ErrInvalid},
		{"consumer name", func(c *configv1.Config) { c.Consumers[0].Name = "a/b" },
			[]string{`consumers[0].name: consumer name "a/b" must not contain "/"`}, ErrInvalid},
		{"duplicate consumer", func(c *configv1.Config) {
			c.Consumers = append(c.Consumers, &configv1.Consumer{Name: "team-a"})
		}, []string{`consumers[1].name: consumer "team-a" is already defined at consumers[0]`}, ErrDuplicate},
		{"key fields", func(c *configv1.Config) {
			c.Consumers[0].Keys = append(c.Consumers[0].Keys,
				&configv1.ConsumerKey{Id: "k1", Hash: "sha256:ABC", ExpiresAt: "tomorrow"},
				&configv1.ConsumerKey{Id: "a:b", Hash: "llmp-pasted-by-mistake"},
				&configv1.ConsumerKey{},
				nil)
		}, []string{
			`consumers[0].keys[1].id: key id "k1" is already used at consumers[0].keys[0]`,
			`consumers[0].keys[1].hash: hash must be "sha256:" and 64 lowercase hex digits (llmproxyctl key hash prints it); never put the key itself here`,
			`consumers[0].keys[1].expires_at: "tomorrow" is not an RFC 3339 time such as "2026-01-31T00:00:00Z"`,
			`consumers[0].keys[2].id: key id "a:b" must be 1-64 letters, digits, ".", "_" or "-"`,
			`consumers[0].keys[2].hash: hash must be "sha256:" and 64 lowercase hex digits (llmproxyctl key hash prints it); never put the key itself here`,
			`consumers[0].keys[3].id: key id is required`,
			`consumers[0].keys[3].hash: hash is required ("sha256:" and 64 hex digits; llmproxyctl key hash prints it)`,
			`consumers[0].keys[4]: key is empty`,
		}, ErrInvalid},
		{"upper-case hex", func(c *configv1.Config) {
			c.Consumers[0].Keys[0].Hash = strings.ToUpper(hashA)
		}, []string{`consumers[0].keys[0].hash: hash must be "sha256:" and 64 lowercase hex digits (llmproxyctl key hash prints it); never put the key itself here`}, ErrInvalid},
		{"one key, two consumers", func(c *configv1.Config) {
			c.Consumers = append(c.Consumers, &configv1.Consumer{Name: "b", Keys: []*configv1.ConsumerKey{{Id: "x", Hash: hashA}}})
		}, []string{`consumers[1].keys[0].hash: the same key hash is already used at consumers[0].keys[0].hash: a key identifies one consumer`}, ErrDuplicate},
		{"models and forwards", func(c *configv1.Config) {
			c.Consumers[0].Models = []string{"gpt-[", "", "gpt-4o*", "gpt-4o*"}
			c.Consumers[0].Forwards = []string{"nope", "main", "main"}
		}, []string{
			`consumers[0].models[0]: invalid model glob "gpt-[": syntax error in pattern`,
			`consumers[0].models[1]: model glob is empty`,
			`consumers[0].models[3]: model glob "gpt-4o*" is already listed at consumers[0].models[2]`,
			`consumers[0].forwards[0]: forward "nope" is not defined`,
			`consumers[0].forwards[2]: forward "main" is already listed at consumers[0].forwards[1]`,
		}, ErrInvalid},
		{"limits out of range", func(c *configv1.Config) {
			c.Consumers[0].Limits = &configv1.ConsumerLimits{
				RequestsPerMinute: proto.Uint32(0), TokensPerMinute: proto.Uint64(2_000_000_000_000), TokensPerDay: proto.Uint64(0),
				MaxParallel: proto.Uint32(100_001), Budget: &configv1.Budget{Usd: 0, Period: "year"},
			}
		}, []string{
			`consumers[0].limits.requests_per_minute: 0 is out of range 1-10000000`,
			`consumers[0].limits.tokens_per_minute: 2000000000000 is out of range 1-1000000000000`,
			`consumers[0].limits.tokens_per_day: 0 is out of range 1-1000000000000`,
			`consumers[0].limits.max_parallel: 100001 is out of range 1-100000`,
			`consumers[0].limits.budget.usd: budget usd 0 must be more than 0 and at most 1000000000`,
			`consumers[0].limits.budget.period: unknown budget period "year" (want day, week or month)`,
		}, ErrInvalid},
		{"labels", func(c *configv1.Config) {
			c.Consumers[0].Labels = map[string]string{"cost-center": "x", "__x": "y", "consumer": "z", "ok": "a\nb"}
		}, []string{
			`consumers[0].labels["__x"]: label name "__x" must match [a-zA-Z_][a-zA-Z0-9_]* and not start with "__" (it becomes a Prometheus label)`,
			`consumers[0].labels["consumer"]: label name "consumer" is taken by the consumer's name`,
			`consumers[0].labels["cost-center"]: label name "cost-center" must match [a-zA-Z_][a-zA-Z0-9_]* and not start with "__" (it becomes a Prometheus label)`,
			`consumers[0].labels["ok"]: label value contains control characters`,
		}, ErrInvalid},
		{"pricing", func(c *configv1.Config) {
			c.Pricing = append(c.Pricing, &configv1.Price{Model: "gpt-4o*", InputPerMillion: -1}, &configv1.Price{OutputPerMillion: 2e6}, nil)
		}, []string{
			`pricing[1].model: model glob "gpt-4o*" is already priced at pricing[0]`,
			`pricing[1].input_per_million: -1 is out of range 0-1000000 (USD per million tokens)`,
			`pricing[2].model: model glob is required`,
			`pricing[2].output_per_million: 2e+06 is out of range 0-1000000 (USD per million tokens)`,
			`pricing[3]: price is empty`,
		}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := withConsumer()
			tt.mutate(c)
			err := Validate(c)
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Errorf("errors.Is(err, %v) is false", tt.kind)
			}
			ApplyDefaults(c)
			if again := Validate(c); (again == nil) != (err == nil) {
				t.Errorf("after ApplyDefaults: %v; before: %v", again, err)
			}
		})
	}
}

func TestKeyHash(t *testing.T) {
	sum := sha256.Sum256([]byte("llmp-x"))
	s := FormatKeyHash(sum)
	if !strings.HasPrefix(s, "sha256:") || len(s) != len("sha256:")+64 {
		t.Fatalf("FormatKeyHash = %q", s)
	}
	got, ok := ParseKeyHash(s)
	if !ok || got != sum {
		t.Fatalf("ParseKeyHash(FormatKeyHash(x)) = %x, %v", got, ok)
	}
	for _, bad := range []string{"", "sha256:", "sha1:" + s[7:], s + "0", strings.ToUpper(s), "sha256:" + strings.Repeat("zz", 32)} {
		if _, ok := ParseKeyHash(bad); ok {
			t.Errorf("ParseKeyHash(%q) accepted it", bad)
		}
	}
}

func TestParseConsumers(t *testing.T) {
	c := withConsumer()
	c.Consumers[0].Keys = append(c.Consumers[0].Keys, &configv1.ConsumerKey{Id: "k2", Hash: "${env:K2_HASH}", Disabled: proto.Bool(true)})
	c.Consumers[0].Limits.Budget.Period = ""
	k2 := sha256.Sum256([]byte("llmp-two"))
	m, err := Parse(c, func(name string) (string, bool) {
		if name == "K2_HASH" {
			return FormatKeyHash(k2), true
		}
		return "sk-x", true
	})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := m.Forwards[0].ClientAuth; got != ClientAuthRequired {
		t.Errorf("client_auth = %v, want required", got)
	}
	cs := m.Consumers[0]
	if cs.Name != "team-a" || len(cs.Keys) != 2 || cs.Keys[0].ID != "k1" || cs.Keys[0].Hash != sha256.Sum256([]byte("llmp-one")) {
		t.Fatalf("consumer = %+v", cs)
	}
	if !cs.Keys[0].ExpiresAt.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) || cs.Keys[0].Disabled {
		t.Errorf("key 0 = %+v", cs.Keys[0])
	}
	if cs.Keys[1].Hash != k2 || !cs.Keys[1].Disabled || !cs.Keys[1].ExpiresAt.IsZero() {
		t.Errorf("key from the environment = %+v", cs.Keys[1])
	}
	if len(cs.Models) != 1 || !cs.Models[0].Match("gpt-4o-mini") || cs.Models[0].Match("claude-3") {
		t.Errorf("models = %v", cs.Models)
	}
	if len(cs.Forwards) != 1 || m.Forwards[cs.Forwards[0]].Name != "main" {
		t.Errorf("forwards = %v", cs.Forwards)
	}
	want := Limits{RequestsPerMinute: 10, TokensPerMinute: 1000, TokensPerDay: 100000, MaxParallel: 2, Budget: &Budget{USD: 5, Period: BudgetMonth}}
	if cs.Limits.RequestsPerMinute != want.RequestsPerMinute || cs.Limits.TokensPerMinute != want.TokensPerMinute ||
		cs.Limits.TokensPerDay != want.TokensPerDay || cs.Limits.MaxParallel != want.MaxParallel || *cs.Limits.Budget != *want.Budget {
		t.Errorf("limits = %+v, budget %+v; want %+v", cs.Limits, cs.Limits.Budget, want)
	}
	if cs.Labels["team"] != "search" {
		t.Errorf("labels = %v", cs.Labels)
	}
	if len(m.Pricing) != 1 || !m.Pricing[0].Model.Match("gpt-4o") || m.Pricing[0].OutputPerMillion != 10 {
		t.Errorf("pricing = %+v", m.Pricing)
	}
	if got := BudgetWeek.String() + ClientAuthOptional.String(); got != "weekoptional" {
		t.Errorf("enum names = %q", got)
	}
}
