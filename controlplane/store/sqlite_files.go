package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// privateSQLiteFiles makes the database at path readable by its owner only before SQLite
// opens it: the config holds upstream credentials in clear. It creates a missing directory
// 0700 and a missing database file 0600; SQLite gives its WAL and shared-memory files the
// database file's mode. Files left readable by others by an older version (the database,
// -wal, -shm) are narrowed to 0600, with a log line. An existing directory is left as is.
func privateSQLiteFiles(path string, logger *slog.Logger) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		return f.Close()
	case !errors.Is(err, fs.ErrExist):
		return fmt.Errorf("create database file: %w", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			continue // -wal and -shm exist only while the database is open
		}
		if mode := st.Mode().Perm(); mode&0o077 != 0 {
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("make %s private: %w", p, err)
			}
			logger.Warn("store: database file was readable by others; made it private", "file", p, "was", mode.String(), "now", "-rw-------")
		}
	}
	return nil
}
