package validate

import (
	"encoding/hex"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/route"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// KeyHashPrefix starts every consumer key hash: "sha256:" and 64 lowercase hex digits.
const KeyHashPrefix = "sha256:"

// FormatKeyHash returns the configuration's spelling of a key's SHA-256 digest.
func FormatKeyHash(sum [32]byte) string { return KeyHashPrefix + hex.EncodeToString(sum[:]) }

// ParseKeyHash returns the digest a key hash spells, and whether s is a valid one:
// KeyHashPrefix and exactly 64 lowercase hex digits.
func ParseKeyHash(s string) (sum [32]byte, ok bool) {
	h, found := strings.CutPrefix(s, KeyHashPrefix)
	if !found || len(h) != 64 || strings.ToLower(h) != h {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
		return sum, false
	}
	return sum, true
}

// Consumer limits' ranges (config.proto).
const (
	maxRequestsPerMinute = 10_000_000
	maxTokens            = 1_000_000_000_000
	maxParallel          = 100_000
	maxBudgetUSD         = 1_000_000_000
	maxPricePerMillion   = 1_000_000
)

var (
	keyIDRE     = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// consumers checks the consumers list; forwards are the names of the defined forwards.
func (v *validator) consumers(list []*configv1.Consumer, forwards map[string]int) {
	hashes := map[string]string{} // hash → path of its first use
	v.m.Consumers = make([]*Consumer, len(list))
	namedList(v, "consumers", "consumer", list, func(i int, p string, c *configv1.Consumer) {
		out := &Consumer{Name: c.Name, Labels: c.Labels}
		v.m.Consumers[i] = out
		ids := make(map[string]int, len(c.Keys))
		for j, k := range c.Keys {
			kp := fmt.Sprintf("%s.keys[%d]", p, j)
			if k == nil {
				v.add(kp, ErrInvalid, "key is empty")
				continue
			}
			switch {
			case k.Id == "":
				v.add(kp+".id", ErrInvalid, "key id is required")
			case !keyIDRE.MatchString(k.Id):
				v.add(kp+".id", ErrInvalid, "key id %q must be 1-64 letters, digits, \".\", \"_\" or \"-\"", k.Id)
			default:
				if first, dup := ids[k.Id]; dup {
					v.add(kp+".id", ErrDuplicate, "key id %q is already used at %s.keys[%d]", k.Id, p, first)
				} else {
					ids[k.Id] = j
				}
			}
			key := ConsumerKey{ID: k.Id, Hash: v.keyHash(kp+".hash", k.Hash, hashes), Disabled: k.GetDisabled()}
			if k.ExpiresAt != "" && !IsEnvRef(k.ExpiresAt) {
				t, err := time.Parse(time.RFC3339, k.ExpiresAt)
				if err != nil {
					v.add(kp+".expires_at", ErrInvalid, "%q is not an RFC 3339 time such as \"2026-01-31T00:00:00Z\"", k.ExpiresAt)
				}
				key.ExpiresAt = t
			}
			out.Keys = append(out.Keys, key)
		}
		seen := make(map[string]int, len(c.Models))
		for j, m := range c.Models {
			mp := fmt.Sprintf("%s.models[%d]", p, j)
			switch {
			case m == "":
				v.add(mp, ErrInvalid, "model glob is empty")
			case IsEnvRef(m):
			default:
				g, err := route.ParseGlob(m)
				switch first, dup := seen[m]; {
				case err != nil:
					v.add(mp, ErrInvalid, "invalid model glob %q: %v", m, err)
				case dup:
					v.add(mp, ErrDuplicate, "model glob %q is already listed at %s.models[%d]", m, p, first)
				default:
					seen[m] = j
					out.Models = append(out.Models, g)
				}
			}
		}
		fseen := make(map[string]int, len(c.Forwards))
		for j, f := range c.Forwards {
			fp := fmt.Sprintf("%s.forwards[%d]", p, j)
			idx := v.ref(fp, "forward", f, forwards)
			if first, dup := fseen[f]; dup && f != "" {
				v.add(fp, ErrDuplicate, "forward %q is already listed at %s.forwards[%d]", f, p, first)
			} else {
				fseen[f] = j
				out.Forwards = append(out.Forwards, idx)
			}
		}
		out.Limits = v.limits(p+".limits", c.Limits)
		for _, k := range sortedKeys(c.Labels) {
			lp := fmt.Sprintf("%s.labels[%q]", p, k)
			switch {
			case !labelNameRE.MatchString(k) || strings.HasPrefix(k, "__"):
				v.add(lp, ErrInvalid, "label name %q must match [a-zA-Z_][a-zA-Z0-9_]* and not start with \"__\" (it becomes a Prometheus label)", k)
			case k == "consumer":
				v.add(lp, ErrInvalid, "label name \"consumer\" is taken by the consumer's name")
			}
			if val := c.Labels[k]; !IsEnvRef(val) && hasControl(val) {
				v.add(lp, ErrInvalid, "label value contains control characters")
			}
		}
	})
}

// keyHash checks a key hash and returns its digest; hashes maps the hashes seen so far to
// their paths.
func (v *validator) keyHash(p, h string, hashes map[string]string) [32]byte {
	switch {
	case h == "":
		v.add(p, ErrInvalid, "hash is required (\"sha256:\" and 64 hex digits; llmproxyctl key hash prints it)")
		return [32]byte{}
	case IsEnvRef(h):
		return [32]byte{}
	}
	sum, ok := ParseKeyHash(h)
	if !ok {
		// The value may be a key pasted by mistake: never echo it.
		v.add(p, ErrInvalid, "hash must be \"sha256:\" and 64 lowercase hex digits (llmproxyctl key hash prints it); never put the key itself here")
		return sum
	}
	if first, dup := hashes[h]; dup {
		v.add(p, ErrDuplicate, "the same key hash is already used at %s: a key identifies one consumer", first)
		return sum
	}
	hashes[h] = p
	return sum
}

// limits checks a consumer's limits block and returns them.
func (v *validator) limits(p string, l *configv1.ConsumerLimits) Limits {
	if l == nil {
		return Limits{}
	}
	v.rangeU32(p+".requests_per_minute", l.RequestsPerMinute, 1, maxRequestsPerMinute)
	v.rangeU64(p+".tokens_per_minute", l.TokensPerMinute, 1, maxTokens)
	v.rangeU64(p+".tokens_per_day", l.TokensPerDay, 1, maxTokens)
	v.rangeU32(p+".max_parallel", l.MaxParallel, 1, maxParallel)
	out := Limits{
		RequestsPerMinute: int64(l.GetRequestsPerMinute()),
		TokensPerMinute:   int64(min(l.GetTokensPerMinute(), maxTokens)),
		TokensPerDay:      int64(min(l.GetTokensPerDay(), maxTokens)),
		MaxParallel:       int64(l.GetMaxParallel()),
	}
	if b := l.Budget; b != nil {
		bp := p + ".budget"
		if math.IsNaN(b.Usd) || b.Usd <= 0 || b.Usd > maxBudgetUSD {
			v.add(bp+".usd", ErrInvalid, "budget usd %v must be more than 0 and at most %d", b.Usd, maxBudgetUSD)
		}
		out.Budget = &Budget{USD: b.Usd, Period: defaultBudgetPeriod}
		if per := b.Period; per != "" && !IsEnvRef(per) {
			bper, ok := parseEnum[BudgetPeriod](budgetPeriodNames, per)
			if !ok {
				v.add(bp+".period", ErrInvalid, "unknown budget period %q (want %s)", per, choices(budgetPeriodNames))
			}
			out.Budget.Period = bper
		}
	}
	return out
}

// pricing checks the pricing list.
func (v *validator) pricing(list []*configv1.Price) {
	seen := make(map[string]int, len(list))
	v.m.Pricing = make([]Price, 0, len(list))
	for i, pr := range list {
		p := fmt.Sprintf("pricing[%d]", i)
		if pr == nil {
			v.add(p, ErrInvalid, "price is empty")
			continue
		}
		switch {
		case pr.Model == "":
			v.add(p+".model", ErrInvalid, "model glob is required")
		case IsEnvRef(pr.Model):
			v.add(p+".model", ErrInvalid, "model glob cannot be an environment reference")
		default:
			g, err := route.ParseGlob(pr.Model)
			switch first, dup := seen[pr.Model]; {
			case err != nil:
				v.add(p+".model", ErrInvalid, "invalid model glob %q: %v", pr.Model, err)
			case dup:
				v.add(p+".model", ErrDuplicate, "model glob %q is already priced at pricing[%d]", pr.Model, first)
			default:
				seen[pr.Model] = i
				v.m.Pricing = append(v.m.Pricing, Price{Model: g, InputPerMillion: pr.InputPerMillion, OutputPerMillion: pr.OutputPerMillion})
			}
		}
		for _, f := range []struct {
			name string
			val  float64
		}{{"input_per_million", pr.InputPerMillion}, {"output_per_million", pr.OutputPerMillion}} {
			if math.IsNaN(f.val) || f.val < 0 || f.val > maxPricePerMillion {
				v.add(p+"."+f.name, ErrInvalid, "%v is out of range 0-%d (USD per million tokens)", f.val, maxPricePerMillion)
			}
		}
	}
}

// clientAuth checks a forward's client_auth and returns it.
func (v *validator) clientAuth(p, s string) ClientAuth {
	if s == "" || IsEnvRef(s) {
		return defaultClientAuth
	}
	mode, ok := parseEnum[ClientAuth](clientAuthNames, s)
	if !ok {
		v.add(p, ErrInvalid, "unknown client_auth %q (want %s)", s, choices(clientAuthNames))
	}
	return mode
}

func (v *validator) rangeU64(p string, val *uint64, lo, hi uint64) {
	if val != nil && (*val < lo || *val > hi) {
		v.add(p, ErrInvalid, "%d is out of range %d-%d", *val, lo, hi)
	}
}
