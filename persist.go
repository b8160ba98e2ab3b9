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
	"sort"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/sticktable"
)

// The persisted snapshot bundles every table's own snapshot (see
// sticktable.Table.WriteSnapshot) and the drained servers:
//
//	"STKYSNAP" | version u8 | drained: count u32, (len u16, bytes)* |
//	tables: count u32, (name: len u16, bytes; snapshot: len u32, bytes)*
const (
	snapshotMagic   = "STKYSNAP"
	snapshotVersion = 1
	storageKey      = "sticky/snapshot"
	// maxSnapshot bounds what load reads, so a corrupt length cannot make
	// us allocate without limit.
	maxSnapshot = 4 << 30
)

type snapshotStore interface {
	load() (*snapshotFile, error)
	save(map[string]*tableHandle) error
}

func newSnapshotStore(ctx caddy.Context, cfg *PersistConfig) snapshotStore {
	if cfg.Path != "" {
		return fileStore{path: cfg.Path}
	}
	return storageStore{ctx: ctx, storage: ctx.Storage()}
}

type fileStore struct{ path string }

func (f fileStore) load() (*snapshotFile, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeSnapshotFile(b)
}

// save writes to a temporary file and renames it, so a crash mid-write
// leaves the previous snapshot intact.
func (f fileStore) save(tables map[string]*tableHandle) error {
	b, err := encodeSnapshotFile(tables)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return err
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, f.path)
}

type storageStore struct {
	ctx     caddy.Context
	storage certmagic.Storage
}

func (s storageStore) load() (*snapshotFile, error) {
	b, err := s.storage.Load(s.ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeSnapshotFile(b)
}

func (s storageStore) save(tables map[string]*tableHandle) error {
	b, err := encodeSnapshotFile(tables)
	if err != nil {
		return err
	}
	return s.storage.Store(s.ctx, storageKey, b)
}

// snapshotFile is a decoded snapshot: raw table snapshots by name.
type snapshotFile struct {
	drained []string
	tables  map[string][]byte
}

// restore loads the named table's entries, if the snapshot has them.
func (f *snapshotFile) restore(name string, t *sticktable.Table) (int, error) {
	b, ok := f.tables[name]
	if !ok {
		return 0, nil
	}
	return t.ReadSnapshot(bytes.NewReader(b))
}

func restoreDrain(f *snapshotFile) {
	if len(f.drained) > 0 && len(drain.List()) == 0 {
		drain.Replace(f.drained)
	}
}

func encodeSnapshotFile(tables map[string]*tableHandle) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(snapshotMagic)
	buf.WriteByte(snapshotVersion)
	drained := drain.List()
	writeU32(&buf, uint32(len(drained)))
	for _, s := range drained {
		if err := writeStr16(&buf, s); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(tables))
	for name := range tables {
		names = append(names, name)
	}
	sort.Strings(names)
	writeU32(&buf, uint32(len(names)))
	var tb bytes.Buffer
	for _, name := range names {
		tb.Reset()
		if err := tables[name].table.WriteSnapshot(&tb); err != nil {
			return nil, fmt.Errorf("table %s: %v", name, err)
		}
		if err := writeStr16(&buf, name); err != nil {
			return nil, err
		}
		writeU32(&buf, uint32(tb.Len()))
		buf.Write(tb.Bytes())
	}
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
	if v := magic[len(snapshotMagic)]; v != snapshotVersion {
		return nil, fmt.Errorf("snapshot format version %d, this build reads %d", v, snapshotVersion)
	}
	f := &snapshotFile{tables: map[string][]byte{}}
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
	if n, err = readU32(r); err != nil {
		return nil, err
	}
	for i := uint32(0); i < n; i++ {
		name, err := readStr16(r)
		if err != nil {
			return nil, err
		}
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
		f.tables[name] = data
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
