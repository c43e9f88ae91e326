package config

import (
	"errors"
	"sync"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Applier is the one way a configuration becomes the running one: validate (Apply only),
// build a Runtime, install it, then commit the Registry (adopt the new runtime's state, drop
// what nothing uses any more). A configuration refused at any step leaves the Holder and the
// Registry as they were: nothing is registered before the install succeeded. Calls are
// serialized, so the Registry always matches the Holder's runtime; all methods are safe for
// concurrent use.
type Applier struct {
	holder  *Holder
	reg     *Registry
	install func(*Runtime) error
	opts    Options

	mu       sync.Mutex
	revision string // the revision applied last
}

// NewApplier returns an Applier over holder and reg. install makes a runtime the current one
// or fails leaving the running state as it was (server.Server.Apply opens the runtime's
// listeners, then stores it in holder); nil means holder.Store. opts are the Build options
// (Revision is set per call; Env serves Apply). holder and reg are required.
func NewApplier(holder *Holder, reg *Registry, install func(*Runtime) error, opts Options) *Applier {
	if install == nil {
		install = func(rt *Runtime) error {
			holder.Store(rt)
			return nil
		}
	}
	return &Applier{holder: holder, reg: reg, install: install, opts: opts.withDefaults()}
}

// Apply validates cfg (validate.Parse, with the Options' Env) and applies it as revision
// (see ApplyModel). A configuration fault is returned as validate.FieldErrors joined (see
// validate.Errors), each with its path.
func (a *Applier) Apply(revision string, cfg *configv1.Config) error {
	m, err := validate.Parse(cfg, a.opts.Env)
	if err != nil {
		return err
	}
	return a.ApplyModel(revision, m, nil)
}

// ApplyModel reads the files m names (LoadFiles: one it cannot load refuses m), builds the
// runtime of m as revision, installs it and commits the Registry;
// overrides become Runtime.EnvOverrides (a static file's LLMPROXY_ variables, else nil).
// When revision is not empty and is the one applied last, it does nothing (a revision names
// one configuration). When install fails, the runtime's new state is released and the error
// returned; the previous runtime keeps serving.
func (a *Applier) ApplyModel(revision string, m *validate.Model, overrides []configfile.Override) error {
	if m == nil {
		return errors.New("apply config: nil model")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	log := a.opts.Logger
	if revision != "" && revision == a.revision && a.holder.Load() != nil {
		log.Info("config unchanged", "revision", revision)
		return nil
	}
	opts := a.opts
	opts.Revision, opts.EnvOverrides = revision, overrides
	files, err := LoadFiles(m, log)
	if err != nil {
		return err
	}
	opts.Files = files
	rt := Build(m, a.reg, opts)
	if err := a.install(rt); err != nil {
		a.reg.Discard(rt)
		return err
	}
	a.reg.Commit(rt)
	a.revision = revision
	log.Info("config applied", "revision", revision, "forwards", len(rt.Forwards), "groups", len(rt.Groups))
	return nil
}
