package store

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSQLiteFilesPrivate: the database, its WAL and its directory are readable by their
// owner only, and a database left readable by others is narrowed when opened.
func TestSQLiteFilesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "cp.db")
	s := openStore(t, "sqlite:"+path, options{})
	mustUpdate(t, s, nil, addUpstream("a"))
	wantMode(t, dir, 0o700)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		wantMode(t, p, 0o600)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	openStore(t, "sqlite:"+path, options{})
	wantMode(t, path, 0o600)
}

func wantMode(t *testing.T, p string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v; want %v", filepath.Base(p), got, want)
	}
}
