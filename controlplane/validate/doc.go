// Package validate holds the pure checks of the configuration model
// (gen/llmproxy/config/v1): ApplyDefaults fills every unset optional field with its
// documented default, Validate checks a whole configuration and reports every fault at once
// with its path, and ResolveEnv substitutes `${env:NAME}` references.
//
// The control plane and the proxy share this package, so a configuration the control plane
// accepts is one every proxy accepts too (apart from features a proxy may not implement yet,
// see CheckSupported, and environment references, which only a proxy can resolve).
//
// Every function here is safe for concurrent use on distinct configurations; none keeps state.
package validate
