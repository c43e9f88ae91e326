package configfile

import (
	"fmt"
	"io"
	"os"

	"github.com/llmproxy-go/llmproxy/controlplane/manifest"
)

// MaxFileBytes is the largest configuration file accepted: the size of the largest message
// the fleet carries (manifest.MaxMessageBytes). Decoding costs many times a file's size in
// memory, so a larger file is refused before it is parsed, and ReadFile refuses it before
// reading it.
const MaxFileBytes = manifest.MaxMessageBytes

// tooLarge is the error for a file of size bytes (or more, when reading stopped there).
func tooLarge(file string, size int64) error {
	return &Error{File: file, Msg: fmt.Sprintf("file is too large: %d bytes, over the limit of %d bytes (%d MiB) for a configuration", size, MaxFileBytes, MaxFileBytes>>20)}
}

// ReadFile reads the configuration file at path, refusing one larger than MaxFileBytes
// without reading it.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > MaxFileBytes {
		return nil, tooLarge(path, st.Size())
	}
	// A pipe or a growing file has no size to check: read one byte past the limit.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxFileBytes {
		return nil, tooLarge(path, int64(len(data)))
	}
	return data, nil
}
