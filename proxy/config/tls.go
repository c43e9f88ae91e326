package config

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
)

// Files is the TLS material a model names, read from this proxy's disk: the certificate of
// each forward with tls and the CA file of each group with http_client.tls.ca. These files
// are facts of the proxy's machine, which the control plane cannot check: LoadFiles reads
// them before Build, and a configuration naming a file the proxy cannot load is refused (a
// NACK, or a refused file and a failing --test) with the field's path. A Files is not
// modified after LoadFiles returns.
type Files struct {
	forwards []*tlsconfig.Pair // by index in Model.Forwards; nil: plaintext
	cas      map[string]caFile // by file name
}

// caFile is a CA bundle and the SHA-256 of its file, which keys the transports trusting it.
type caFile struct {
	pool   *x509.CertPool
	digest [sha256.Size]byte
}

// LoadFiles reads the files m names. Every file that cannot be loaded is reported, as
// validate.FieldErrors (kind ErrInvalid) joined. A forward's certificate is read again by
// itself when its files change (tlsconfig.Pair, logging to log); a CA file is read here
// only, so a changed one takes effect with the next configuration applied.
func LoadFiles(m *validate.Model, log *slog.Logger) (*Files, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Files{forwards: make([]*tlsconfig.Pair, len(m.Forwards)), cas: map[string]caFile{}}
	var errs []error
	for i, fw := range m.Forwards {
		if fw.TLS == nil {
			continue
		}
		pair, err := tlsconfig.LoadPair(fw.TLS.Cert, fw.TLS.Key, log.With("forward", fw.Name))
		if err != nil {
			errs = append(errs, fileError(fmt.Sprintf("http_server.forwards[%d].tls", i), err))
			continue
		}
		f.forwards[i] = pair
	}
	for i, g := range m.Groups {
		ca := g.Client.CA
		if _, done := f.cas[ca]; ca == "" || done {
			continue
		}
		pool, digest, err := tlsconfig.ReadCA(ca)
		if err != nil {
			errs = append(errs, fileError(fmt.Sprintf("upstream_groups[%d].http_client.tls.ca", i), err))
			continue
		}
		f.cas[ca] = caFile{pool: pool, digest: digest}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f, nil
}

func fileError(path string, err error) error {
	return &validate.FieldError{Path: path, Kind: validate.ErrInvalid, Msg: "this proxy cannot load it: " + err.Error()}
}

// forward returns the certificate of the forward at index i of the model, which has tls.
func (f *Files) forward(i int) *tlsconfig.Pair {
	if f == nil || i >= len(f.forwards) || f.forwards[i] == nil {
		panic(fmt.Sprintf("config: Build of a model naming a certificate for forward %d without Options.Files from LoadFiles", i))
	}
	return f.forwards[i]
}

// ca returns the CA bundle of file name (the zero caFile for "").
func (f *Files) ca(name string) caFile {
	if name == "" {
		return caFile{}
	}
	if f != nil {
		if c, ok := f.cas[name]; ok {
			return c
		}
	}
	panic(fmt.Sprintf("config: Build of a model naming CA file %q without Options.Files from LoadFiles", name))
}
