package sticky

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-sticky/sticky/sticktable"
)

// The persisted snapshot bundles every table's own snapshot (see
// sticktable.Table.WriteSnapshot) and the drain table's:
//
//	"STKYSNAP" | version u8 (2) |
//	tables: count u32, (name: len u16, bytes; snapshot: len u32, bytes)* |
//	drain table snapshot: len u32, bytes (0: none)
//
// Version 1 held a plain list of drained servers (count u32, (len u16,
// bytes)*) before the tables and no drain table; it is still read.
const (
	snapshotMagic   = "STKYSNAP"
	snapshotVersion = 2
	storageKey      = "sticky/snapshot"
	// maxSnapshot bounds what load reads, checked before reading: a
	// corrupt or foreign file must not make us allocate without limit.
	maxSnapshot = 4 << 30
)

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
	if st.Size() > maxSnapshot {
		return nil, fmt.Errorf("snapshot %s of %d bytes is larger than %d", f.path, st.Size(), maxSnapshot)
	}
	b, err := io.ReadAll(io.LimitReader(fh, maxSnapshot+1))
	if err != nil {
		return nil, err
	}
	return decodeSnapshotFile(b)
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
	if info.Size > maxSnapshot {
		return nil, fmt.Errorf("snapshot of %d bytes in storage is larger than %d", info.Size, maxSnapshot)
	}
	b, err := s.storage.Load(s.ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeSnapshotFile(b)
}

func (s storageStore) save(tables map[string]*tableUse, drainTable *sticktable.Table) error {
	b, err := encodeSnapshotFile(tables, drainTable)
	if err != nil {
		return err
	}
	return s.storage.Store(s.ctx, storageKey, b)
}

// snapshotFile is a decoded snapshot: raw table snapshots by name.
type snapshotFile struct {
	tables map[string][]byte
	// drainTable is the drain table's snapshot (format 2)
	drainTable []byte
	// drained is the list of format 1
	drained []string
}

// restore loads the named table's entries, if the snapshot has them.
func (f *snapshotFile) restore(name string, t *sticktable.Table) (int, error) {
	b, ok := f.tables[name]
	if !ok {
		return 0, nil
	}
	return t.ReadSnapshot(bytes.NewReader(b))
}

func encodeSnapshotFile(tables map[string]*tableUse, drainTable *sticktable.Table) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(snapshotMagic)
	buf.WriteByte(snapshotVersion)
	names := sortedKeys(tables)
	writeU32(&buf, uint32(len(names)))
	var tb bytes.Buffer
	for _, name := range names {
		tb.Reset()
		if err := tables[name].h.table.WriteSnapshot(&tb); err != nil {
			return nil, fmt.Errorf("table %s: %v", name, err)
		}
		if err := writeStr16(&buf, name); err != nil {
			return nil, err
		}
		writeU32(&buf, uint32(tb.Len()))
		buf.Write(tb.Bytes())
	}
	tb.Reset()
	if drainTable != nil {
		if err := drainTable.WriteSnapshot(&tb); err != nil {
			return nil, fmt.Errorf("drained servers: %v", err)
		}
	}
	writeU32(&buf, uint32(tb.Len()))
	buf.Write(tb.Bytes())
	return buf.Bytes(), nil
}

func decodeSnapshotFile(b []byte) (*snapshotFile, error) {
	if len(b) > maxSnapshot {
		return nil, fmt.Errorf("snapshot of %d bytes is larger than %d", len(b), maxSnapshot)
	}
	r := bufio.NewReader(bytes.NewReader(b))
	magic := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic[:len(snapshotMagic)]) != snapshotMagic {
		return nil, errors.New("not a sticky snapshot")
	}
	v := magic[len(snapshotMagic)]
	if v != 1 && v != snapshotVersion {
		return nil, fmt.Errorf("snapshot format version %d, this build reads 1 and %d", v, snapshotVersion)
	}
	f := &snapshotFile{tables: map[string][]byte{}}
	if v == 1 {
		n, err := readU32(r)
		if err != nil {
			return nil, err
		}
		for i := uint32(0); i < n; i++ {
			s, err := readStr16(r)
			if err != nil {
				return nil, err
			}
			f.drained = append(f.drained, s)
		}
	}
	n, err := readU32(r)
	if err != nil {
		return nil, err
	}
	readBlob := func() ([]byte, error) {
		size, err := readU32(r)
		if err != nil {
			return nil, err
		}
		if int(size) > len(b) {
			return nil, errors.New("truncated snapshot")
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, errors.New("truncated snapshot")
		}
		return data, nil
	}
	for i := uint32(0); i < n; i++ {
		name, err := readStr16(r)
		if err != nil {
			return nil, err
		}
		data, err := readBlob()
		if err != nil {
			return nil, err
		}
		f.tables[name] = data
	}
	if v >= 2 {
		data, err := readBlob()
		if err != nil {
			return nil, err
		}
		if len(data) > 0 {
			f.drainTable = data
		}
	}
	return f, nil
}

func writeU32(w *bytes.Buffer, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	w.Write(b[:])
}

func writeStr16(w *bytes.Buffer, s string) error {
	if len(s) > 0xffff {
		return fmt.Errorf("name too long: %d bytes", len(s))
	}
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], uint16(len(s)))
	w.Write(b[:])
	w.WriteString(s)
	return nil
}

func readU32(r io.Reader) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, errors.New("truncated snapshot")
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

func readStr16(r io.Reader) (string, error) {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", errors.New("truncated snapshot")
	}
	s := make([]byte, binary.BigEndian.Uint16(b[:]))
	if _, err := io.ReadFull(r, s); err != nil {
		return "", errors.New("truncated snapshot")
	}
	return string(s), nil
}
