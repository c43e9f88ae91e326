// Package quota keeps consumers' limits: requests per minute, tokens per minute and per day,
// requests in flight, and spend per calendar period. A Limiter holds one consumer to its
// Limits: Admit decides whether a request may start (counting it and taking a parallel slot
// when it may), Settle ends it (charging its tokens and spend, giving the slot back).
//
// Counts live in Redis when the Limiter has a Shared store, so every proxy on one Redis
// enforces one limit: each Admit and each Settle is one Lua script, one round trip, atomic.
// Without Redis, and whenever Redis fails or is slow (a Guard decides), a Local store in the
// process counts instead; the request is never refused because Redis is away.
//
// Windows slide in sixtieths: a minute window counts the last 60 one-second buckets, a day
// window the last 60 buckets of 24 minutes. A count leaves the window between 59 and 60
// steps after it was made. A token limit admits a request while the window's usage is
// below the limit and charges the request's tokens when it ends, so a burst of admitted
// requests can overshoot it (bounded by MaxParallel when that is set). A budget works the
// same way on spend within a calendar period (UTC day, week from Monday, or month).
//
// The package is a leaf: it imports no other package of the proxy. Its types are safe for
// concurrent use.
package quota

import (
	"time"
)

// Period is the calendar period of a budget.
type Period uint8

// Budget periods, in UTC.
const (
	Day Period = iota
	Week
	Month
)

// String names the period as the configuration does.
func (p Period) String() string {
	switch p {
	case Day:
		return "day"
	case Week:
		return "week"
	}
	return "month"
}

// start returns the start of the period holding t, and of the next one (UTC).
func (p Period) bounds(t time.Time) (start, next time.Time) {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch p {
	case Day:
		return day, day.AddDate(0, 0, 1)
	case Week:
		monday := day.AddDate(0, 0, -((int(day.Weekday()) + 6) % 7))
		return monday, monday.AddDate(0, 0, 7)
	}
	first := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return first, first.AddDate(0, 1, 0)
}

// Limits are what a consumer is held to. A zero field is no limit.
type Limits struct {
	RequestsPerMinute int64
	TokensPerMinute   int64
	TokensPerDay      int64
	MaxParallel       int64
	// BudgetMicros is the spend cap per Period, in millionths of a US dollar.
	BudgetMicros int64
	Period       Period
}

// None reports whether l limits nothing.
func (l Limits) None() bool { return l == Limits{Period: l.Period} }

// charges reports whether a request's end must be recorded: its tokens, its spend, or its
// parallel slot.
func (l Limits) charges() bool {
	return l.TokensPerMinute > 0 || l.TokensPerDay > 0 || l.MaxParallel > 0 || l.BudgetMicros > 0
}

// Reason says which limit refused a request.
type Reason uint8

// Reasons of a refusal, in the order they are checked.
const (
	ReasonNone Reason = iota
	ReasonMaxParallel
	ReasonRequestsPerMinute
	ReasonTokensPerMinute
	ReasonTokensPerDay
	ReasonBudget
)

// String names the limit as the configuration does ("budget" for the budget).
func (r Reason) String() string {
	switch r {
	case ReasonMaxParallel:
		return "max_parallel"
	case ReasonRequestsPerMinute:
		return "requests_per_minute"
	case ReasonTokensPerMinute:
		return "tokens_per_minute"
	case ReasonTokensPerDay:
		return "tokens_per_day"
	case ReasonBudget:
		return "budget"
	}
	return ""
}

// Quota is where one limit stands after a decision, for OpenAI's x-ratelimit headers.
type Quota struct {
	// Limit is the limit; 0 when there is none (Remaining and Reset are then meaningless).
	Limit int64
	// Remaining is what the window has left, at least 0.
	Remaining int64
	// Reset is the time until the window holds nothing any more.
	Reset time.Duration
}

// Admission is the decision on one request.
type Admission struct {
	// OK reports whether the request may start. An admitted request must be settled once.
	OK bool
	// Reason is the limit that refused it (ReasonNone when OK).
	Reason Reason
	// RetryAfter is how long until the limit that refused it would admit a request.
	RetryAfter time.Duration
	// Requests is the requests-per-minute quota; Tokens the tokens-per-minute quota, or the
	// tokens-per-day one when there is no minute limit.
	Requests, Tokens Quota
	// SpentMicros is the spend of the budget's period so far (when there is a budget).
	SpentMicros int64
	// Renews is when the budget's period ends (when there is a budget).
	Renews time.Time
	// Fallback reports that Redis could not be asked and the process counted alone.
	Fallback bool

	ticket string // the parallel slot held in Redis; "" when none
	shared bool   // the request was counted in Redis
	local  bool   // the request holds a slot in the Local store
}

// Step widths of the windows: 60 steps a window.
const (
	minuteStep = time.Second
	dayStep    = 24 * time.Minute
	steps      = 60
)

// fill sets the quota fields of a from the usage of each window.
func (a *Admission) fill(l Limits, reqUsed int64, reqReset time.Duration, tokm, tokd window) {
	if l.RequestsPerMinute > 0 {
		a.Requests = Quota{Limit: l.RequestsPerMinute, Remaining: max(0, l.RequestsPerMinute-reqUsed), Reset: reqReset}
	}
	switch {
	case l.TokensPerMinute > 0:
		a.Tokens = Quota{Limit: l.TokensPerMinute, Remaining: max(0, l.TokensPerMinute-tokm.used), Reset: tokm.reset}
	case l.TokensPerDay > 0:
		a.Tokens = Quota{Limit: l.TokensPerDay, Remaining: max(0, l.TokensPerDay-tokd.used), Reset: tokd.reset}
	}
}

// window is where one window stands: its usage and when it empties.
type window struct {
	used  int64
	reset time.Duration
}
