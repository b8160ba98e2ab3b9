package sticky

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-sticky/sticky/internal/snapfile"
	"github.com/caddy-sticky/sticky/sticktable"
)

// storageKey is where the snapshot goes in Caddy's storage; the file's
// format is internal/snapfile's.
const storageKey = "sticky/snapshot"

type snapshotStore interface {
	load() (*snapshotFile, error)
	save(tables map[string]*tableUse, drainTable *sticktable.Table) error
}

func newSnapshotStore(ctx caddy.Context, cfg *PersistConfig) snapshotStore {
	if cfg.Path != "" {
		return fileStore{path: cfg.Path}
	}
	return storageStore{ctx: ctx, storage: ctx.Storage()}
}

type fileStore struct{ path string }

func (f fileStore) load() (*snapshotFile, error) {
	fh, err := os.Open(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > snapfile.Max {
		return nil, fmt.Errorf("snapshot %s of %d bytes is larger than %d", f.path, st.Size(), snapfile.Max)
	}
	b, err := io.ReadAll(io.LimitReader(fh, snapfile.Max+1))
	if err != nil {
		return nil, err
	}
	return snapfile.Decode(b)
}

// save writes to a temporary file, flushes it to disk, renames it over the
// snapshot and flushes the directory, so a crash at any point leaves
// either the previous snapshot or the new one, never a torn or empty file.
func (f fileStore) save(tables map[string]*tableUse, drainTable *sticktable.Table) error {
	b, err := encodeSnapshotFile(tables, drainTable)
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := f.path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = fh.Write(b)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, f.path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type storageStore struct {
	ctx     caddy.Context
	storage certmagic.Storage
}

func (s storageStore) load() (*snapshotFile, error) {
	info, err := s.storage.Stat(s.ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if info.Size > snapfile.Max {
		return nil, fmt.Errorf("snapshot of %d bytes in storage is larger than %d", info.Size, snapfile.Max)
	}
	b, err := s.storage.Load(s.ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return snapfile.Decode(b)
}

func (s storageStore) save(tables map[string]*tableUse, drainTable *sticktable.Table) error {
	b, err := encodeSnapshotFile(tables, drainTable)
	if err != nil {
		return err
	}
	return s.storage.Store(s.ctx, storageKey, b)
}

// snapshotFile is a decoded snapshot: raw table snapshots by name.
type snapshotFile = snapfile.File

func restoreTable(f *snapshotFile, name string, t *sticktable.Table) (int, error) {
	b, ok := f.Tables[name]
	if !ok {
		return 0, nil
	}
	return t.ReadSnapshot(bytes.NewReader(b))
}

func encodeSnapshotFile(tables map[string]*tableUse, drainTable *sticktable.Table) ([]byte, error) {
	names := sortedKeys(tables)
	out := make([]snapfile.Table, 0, len(names))
	for _, name := range names {
		var tb bytes.Buffer
		if err := tables[name].h.table.WriteSnapshot(&tb); err != nil {
			return nil, fmt.Errorf("table %s: %v", name, err)
		}
		out = append(out, snapfile.Table{Name: name, Snapshot: tb.Bytes()})
	}
	var drain []byte
	if drainTable != nil {
		var tb bytes.Buffer
		if err := drainTable.WriteSnapshot(&tb); err != nil {
			return nil, fmt.Errorf("drained servers: %v", err)
		}
		drain = tb.Bytes()
	}
	return snapfile.Encode(out, drain)
}
