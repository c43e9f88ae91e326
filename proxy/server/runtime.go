package server

import (
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
	"github.com/llmproxy-go/llmproxy/proxy/config"
)

// specsOf lists the listeners a runtime needs, in configuration order.
func specsOf(rt *config.Runtime) []forwardSpec {
	specs := make([]forwardSpec, 0, len(rt.Forwards))
	for _, f := range rt.Forwards {
		specs = append(specs, forwardSpec{name: f.Name, addr: f.Addr, headerTimeout: f.HeaderTimeout, tls: f.TLS})
	}
	return specs
}

// revisionOf returns the runtime's revision ("" for nil).
func revisionOf(rt *config.Runtime) string {
	if rt == nil {
		return ""
	}
	return rt.Revision
}

// sourceOf returns the configuration the runtime was compiled from (nil for nil).
func sourceOf(rt *config.Runtime) *configv1.Config {
	if rt == nil {
		return nil
	}
	return rt.Source
}
