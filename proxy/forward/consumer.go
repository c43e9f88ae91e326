package forward

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	"github.com/llmproxy-go/llmproxy/proxy/quota"
)

// Consumers (a forward's client_auth optional or required): the client's key is read from
// Authorization: Bearer, x-api-key or api-key (the OpenAI, Anthropic and Azure SDKs'
// headers), hashed and looked up in the runtime; it never reaches an upstream
// (outbound.go removes those headers, and the upstream's auth and header operations set its
// own). Then, in order: the key's state (401), the forward and model allow-lists (403), the
// consumer's limits (429, with Retry-After). Every answer to a consumer with limits carries
// OpenAI's x-ratelimit-* headers, ours replacing the upstream's. The request's tokens and
// spend are charged when it ends (finish), so usage is read from the answer, streams
// included (usage.go asks an OpenAI stream for its usage when the client did not).

// Refusal reasons: the reason label of llmproxy_consumer_refusals_total.
const (
	refusedNoKey      = "missing_key"
	refusedInvalidKey = "invalid_key"
	refusedExpired    = "expired_key"
	refusedDisabled   = "disabled_key"
	refusedForward    = "forward_not_allowed"
	refusedModel      = "model_not_allowed"
)

// The answers of client auth; the refusals of limits are rendered per refusal (limitError).
var (
	ErrNoAPIKey = newError(http.StatusUnauthorized, "invalid_api_key", "invalid_request_error",
		"no API key: send one as Authorization: Bearer <key>, x-api-key or api-key")
	ErrInvalidAPIKey  = newError(http.StatusUnauthorized, "invalid_api_key", "invalid_request_error", "invalid API key")
	ErrExpiredAPIKey  = newError(http.StatusUnauthorized, "expired_api_key", "invalid_request_error", "the API key has expired")
	ErrDisabledAPIKey = newError(http.StatusUnauthorized, "disabled_api_key", "invalid_request_error", "the API key is disabled")
)

// clientKeyHeaders are the headers a client's key may come in; outbound.go removes them
// from requests of forwards that read keys.
var clientKeyHeaders = [...]string{"Authorization", "X-Api-Key", "Api-Key"}

// clientKey returns the key the request shows, and whether it shows one: the token of an
// Authorization Bearer header, else x-api-key, else api-key.
func clientKey(h http.Header) (string, bool) {
	if v := h["Authorization"]; len(v) > 0 {
		if len(v[0]) > len("Bearer ") && strings.EqualFold(v[0][:len("Bearer ")], "Bearer ") {
			if tok := strings.TrimSpace(v[0][len("Bearer "):]); tok != "" {
				return tok, true
			}
		}
	}
	for _, name := range clientKeyHeaders[1:] {
		if v := h[name]; len(v) > 0 && v[0] != "" {
			return v[0], true
		}
	}
	return "", false
}

// identify finds the request's consumer from its key, when the forward reads keys, and
// refuses a request whose key is missing (required), unknown, expired or disabled, or whose
// consumer may not use the forward.
func (ex *exchange) identify() bool {
	mode := ex.fw.ClientAuth
	if mode == validate.ClientAuthOff {
		return true
	}
	key, given := clientKey(ex.r.Header)
	if !given {
		if mode == validate.ClientAuthRequired {
			ex.rt.Refused(refusedNoKey)
			ex.fail(ErrNoAPIKey, 0)
			return false
		}
		return true // optional: anonymous
	}
	k := ex.rt.ConsumerKey(key)
	if k == nil {
		ex.rt.Refused(refusedInvalidKey)
		ex.fail(ErrInvalidAPIKey, 0)
		return false
	}
	c := k.Consumer
	ex.consumer = c
	if ex.span != nil {
		ex.span.SetAttributes(c.Attributes...)
	}
	switch {
	case k.Disabled:
		c.Refused(refusedDisabled)
		ex.fail(ErrDisabledAPIKey, 0)
	case k.Expired(ex.start):
		c.Refused(refusedExpired)
		ex.fail(ErrExpiredAPIKey, 0)
	case !c.MayUse(ex.fw.Name):
		c.Refused(refusedForward)
		ex.fail(newError(http.StatusForbidden, refusedForward, "permission_error",
			fmt.Sprintf("this API key may not use forward %q", ex.fw.Name)), 0)
	default:
		return true
	}
	return false
}

// admitConsumer applies the identified consumer's model allow-list and limits, once the
// model is known, and asks an OpenAI stream for its usage when the client did not.
func (ex *exchange) admitConsumer() bool {
	c := ex.consumer
	if !c.MayAsk(ex.model) {
		c.Refused(refusedModel)
		ex.fail(newError(http.StatusForbidden, refusedModel, "permission_error",
			fmt.Sprintf("this API key may not use model %q", ex.model)), 0)
		return false
	}
	ex.requestUsage()
	if c.Limiter == nil {
		return true
	}
	ex.adm = c.Limiter.Admit(ex.ctx)
	setRateLimitHeaders(ex.w.Header(), &ex.adm)
	if !ex.adm.OK {
		c.Refused(ex.adm.Reason.String())
		secs := int((ex.adm.RetryAfter + time.Second - 1) / time.Second)
		ex.fail(limitError(c.Limiter.Limits(), &ex.adm), max(secs, 1))
		return false
	}
	return true
}

// settleConsumer ends the request of an identified consumer: it charges its tokens and
// spend to the consumer's limits (even when the client left: the upstream worked) and
// counts it in the consumer's metrics.
func (ex *exchange) settleConsumer() {
	c := ex.consumer
	prompt, completion := ex.usage.prompt, ex.usage.completion
	spend := ex.rt.Price(ex.model, prompt, completion)
	if ex.adm.OK && c.Limiter != nil {
		c.Limiter.Settle(context.WithoutCancel(ex.ctx), &ex.adm, prompt+completion, spend)
	}
	c.Record(ex.model, ex.status, prompt, completion, spend)
}

// consumerHead edits the header h of the answer resp to a consumer's request before it is
// written: OpenAI's x-ratelimit headers replace the upstream's, and a stream whose usage the
// client did not ask for is stripped (usage.go), so its length is no longer known.
func (ex *exchange) consumerHead(h http.Header, resp *http.Response) {
	if ex.consumer.Limiter != nil {
		setRateLimitHeaders(h, &ex.adm)
	}
	if ex.stripUsage && resp.Header.Get("Content-Encoding") == "" &&
		strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		ex.strip = &usageStripper{}
		delete(h, "Content-Length")
	}
}

// limitError is the 429 answer to a refusal by the limit a.Reason of l, in OpenAI's shape.
func limitError(l quota.Limits, a *quota.Admission) *Error {
	switch a.Reason {
	case quota.ReasonBudget:
		return newError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
			fmt.Sprintf("budget exceeded: this consumer's budget of %s USD per %s is spent (%s USD); it renews at %s",
				usd(l.BudgetMicros), l.Period, usd(a.SpentMicros), a.Renews.Format(time.RFC3339)))
	case quota.ReasonMaxParallel:
		return newError(http.StatusTooManyRequests, "rate_limit_exceeded", "requests",
			fmt.Sprintf("too many requests in flight: max_parallel is %d", l.MaxParallel))
	case quota.ReasonRequestsPerMinute:
		return newError(http.StatusTooManyRequests, "rate_limit_exceeded", "requests",
			fmt.Sprintf("rate limit reached: requests_per_minute is %d; retry after %s", l.RequestsPerMinute, quota.FormatReset(a.RetryAfter)))
	case quota.ReasonTokensPerMinute:
		return newError(http.StatusTooManyRequests, "rate_limit_exceeded", "tokens",
			fmt.Sprintf("rate limit reached: tokens_per_minute is %d; retry after %s", l.TokensPerMinute, quota.FormatReset(a.RetryAfter)))
	}
	return newError(http.StatusTooManyRequests, "rate_limit_exceeded", "tokens",
		fmt.Sprintf("rate limit reached: tokens_per_day is %d; retry after %s", l.TokensPerDay, quota.FormatReset(a.RetryAfter)))
}

// usd spells micro-USD as dollars, without trailing zeros.
func usd(micros int64) string { return strconv.FormatFloat(float64(micros)/1e6, 'f', -1, 64) }

// rateLimitPrefix starts the headers setRateLimitHeaders owns.
const rateLimitPrefix = "X-Ratelimit-"

// setRateLimitHeaders replaces every x-ratelimit-* header of h with OpenAI's, from a: the
// requests pair when the consumer has a requests limit, the tokens pair when it has a token
// limit.
func setRateLimitHeaders(h http.Header, a *quota.Admission) {
	for k := range h {
		if strings.HasPrefix(k, rateLimitPrefix) {
			delete(h, k)
		}
	}
	set := func(kind string, q quota.Quota) {
		if q.Limit == 0 {
			return
		}
		h[rateLimitPrefix+"Limit-"+kind] = []string{strconv.FormatInt(q.Limit, 10)}
		h[rateLimitPrefix+"Remaining-"+kind] = []string{strconv.FormatInt(q.Remaining, 10)}
		h[rateLimitPrefix+"Reset-"+kind] = []string{quota.FormatReset(q.Reset)}
	}
	set("Requests", a.Requests)
	set("Tokens", a.Tokens)
}
