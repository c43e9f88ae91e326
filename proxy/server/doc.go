// Package server runs the proxy's listeners: one HTTP server per forward and the admin server.
//
// Each forward gets its own listener, opened with SO_REUSEPORT on Linux so that a second
// listener (of this process during a reload, or of a new process taking over) can bind the
// same address while the old one drains. Apply reconciles the running listeners with a
// compiled runtime config:
//
//   - a new forward: its listener is opened;
//   - a removed forward: its listener stops accepting and its in-flight requests drain in the
//     background, bounded by Options.DrainTimeout;
//   - a forward whose address (or header timeout, or certificate files) changed: the new
//     listener is opened first, then the old one keeps accepting for Options.MoveGrace, so
//     clients and load balancers can follow the move, and then drains;
//   - an unchanged forward keeps its listener. Its handler reads the runtime from the holder
//     per request, so new requests see the new config and in-flight ones finish on the old.
//
// A forward with tls serves HTTPS (HTTP/2 offered by ALPN) with the runtime's certificate
// pair, which reads its files again when they change: a renewed certificate reaches new
// connections without a new config. A listener serving plaintext, a forward or the admin
// listener, on an address other machines can reach logs a warning when it opens.
//
// Every listener a config needs is opened before the config is stored in the holder: a port
// that cannot be bound fails Apply and leaves the running config untouched, so the caller can
// NACK it or keep serving the old file.
//
// The admin server answers /health (the process is alive), /ready (a valid config is applied
// and the server is not shutting down), /metrics (the proxy's Prometheus registry) and /config
// (the applied config with its revision, secrets redacted, and the values that came from
// LLMPROXY_ environment overrides).
package server
