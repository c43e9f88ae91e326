// Package validate is the one validation of the configuration model
// (gen/llmproxy/config/v1), and the only owner of its defaults, ranges and enumerations:
// ApplyDefaults fills every unset optional field with its documented default, Validate checks
// a whole configuration and reports every fault at once with its path, ResolveEnv substitutes
// `${env:NAME}` references, and Parse does all of it and returns the typed Model a proxy
// compiles (durations and URLs parsed, enumerations resolved, retry_on as a set, references
// as indexes, route patterns parsed by package route).
//
// The control plane (Validate) and the proxy (Parse) share this package, so a configuration
// the control plane accepts is one every proxy accepts too, apart from environment
// references, which only a proxy can resolve. Features the model describes but the proxy
// does not implement yet are refused by Validate itself (Unsupported), so the control plane
// never commits a revision the fleet would refuse.
//
// Decisions worth knowing:
//   - The empty configuration is valid (a fresh store holds it).
//   - Names (forwards, upstreams, groups) must be non-empty, unique per kind, without "/"
//     (they are REST path segments), control characters or surrounding spaces. Names,
//     references and route paths may not be `${env:NAME}`: they are identities the control
//     plane must know.
//   - Basic auth needs a username without ":"; an empty password is allowed (RFC 7617).
//     A token with a type other than bearer, or a username/password with a type other
//     than basic, is an error: the credential would silently not be sent.
//   - Route paths are unique per forward, as config.proto states (a route's id is its
//     path), even when their model/header/method conditions differ.
//   - Two listeners (forwards, and the admin listener when present) on one port conflict
//     when their addresses are equal or one is a wildcard: with SO_REUSEPORT both would
//     bind and split the traffic.
//   - A retry max_backoff shorter than initial, and a cache max_object_bytes larger than
//     max_bytes, are errors.
//   - Values that are `${env:NAME}` references skip format checks; NAME must be a valid
//     variable name. Only whole values are references.
//
// Every function here is safe for concurrent use on distinct configurations; none keeps state.
package validate
