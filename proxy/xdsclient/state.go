package xdsclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"

	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// StateFile is the name of the file, in the state directory, that holds the
// last config the proxy applied from the control plane.
const StateFile = "xds-state.json"

// stateDoc is the on-disk form: the revision and the config as protojson.
type stateDoc struct {
	Revision string          `json:"revision"`
	Config   json.RawMessage `json:"config"`
}

// SaveState writes revision and cfg to dir/StateFile atomically: a
// temporary file in dir, synced, then renamed over the old one, so a crash
// leaves either the old or the new state. The file is mode 0600 because the
// config holds upstream credentials; dir is created (0700) when missing.
func SaveState(dir, revision string, cfg *configv1.Config) error {
	body, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("save state: encode config: %w", err)
	}
	data, err := json.Marshal(stateDoc{Revision: revision, Config: body})
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, StateFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, StateFile)); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable where the platform allows
		d.Close()
	}
	return nil
}

// LoadState reads the state saved by the last successful apply. ok is false
// (and err nil) when dir holds no state; err is set when the file exists
// but cannot be read or decoded.
func LoadState(dir string) (revision string, cfg *configv1.Config, ok bool, err error) {
	if dir == "" {
		return "", nil, false, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, fmt.Errorf("load state: %w", err)
	}
	var doc stateDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", nil, false, fmt.Errorf("load state %s: %w", filepath.Join(dir, StateFile), err)
	}
	if _, err := strconv.ParseUint(doc.Revision, 10, 64); err != nil {
		return "", nil, false, fmt.Errorf("load state %s: bad revision %q", filepath.Join(dir, StateFile), doc.Revision)
	}
	cfg = &configv1.Config{}
	if err := protojson.Unmarshal(doc.Config, cfg); err != nil {
		return "", nil, false, fmt.Errorf("load state %s: decode config: %w", filepath.Join(dir, StateFile), err)
	}
	return doc.Revision, cfg, true, nil
}
