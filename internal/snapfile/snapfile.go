// Package snapfile is the format of the sticky app's snapshot file: every
// table's own snapshot (see sticktable.Table.WriteSnapshot) and the drain
// table's, under names:
//
//	"STKYSNAP" | version u8 (2) |
//	tables: count u32, (name: len u16, bytes; snapshot: len u32, bytes)* |
//	drain table snapshot: len u32, bytes (0: none)
//
// Version 1 held a plain list of drained servers (count u32, (len u16,
// bytes)*) before the tables and no drain table; it is still read.
// Integers are big-endian. The package knows nothing of tables: it frames
// bytes, so fuzzing it is cheap.
package snapfile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	magic   = "STKYSNAP"
	version = 2
	// Max bounds what a reader accepts, checked before reading a file: a
	// corrupt or foreign file must not make us allocate without limit.
	Max = 4 << 30
)

// File is a decoded snapshot.
type File struct {
	// Tables holds each table's snapshot by name.
	Tables map[string][]byte
	// DrainTable is the drain table's snapshot (format 2), nil if none.
	DrainTable []byte
	// Drained is the list of drained servers of format 1.
	Drained []string
}

// Table is one table's snapshot, for Encode.
type Table struct {
	Name     string
	Snapshot []byte
}

// Encode writes a snapshot of the tables (in the order given) and the
// drain table's snapshot (nil: none).
func Encode(tables []Table, drainTable []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(magic)
	buf.WriteByte(version)
	writeU32(&buf, uint32(len(tables)))
	for _, t := range tables {
		if err := writeStr16(&buf, t.Name); err != nil {
			return nil, err
		}
		writeU32(&buf, uint32(len(t.Snapshot)))
		buf.Write(t.Snapshot)
	}
	writeU32(&buf, uint32(len(drainTable)))
	buf.Write(drainTable)
	return buf.Bytes(), nil
}

// Decode reads a snapshot of format 1 or 2.
func Decode(b []byte) (*File, error) {
	if len(b) > Max {
		return nil, fmt.Errorf("snapshot of %d bytes is larger than %d", len(b), Max)
	}
	r := bufio.NewReader(bytes.NewReader(b))
	head := make([]byte, len(magic)+1)
	if _, err := io.ReadFull(r, head); err != nil || string(head[:len(magic)]) != magic {
		return nil, errors.New("not a sticky snapshot")
	}
	v := head[len(magic)]
	if v != 1 && v != version {
		return nil, fmt.Errorf("snapshot format version %d, this build reads 1 and %d", v, version)
	}
	f := &File{Tables: map[string][]byte{}}
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
			f.Drained = append(f.Drained, s)
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
		f.Tables[name] = data
	}
	if v >= 2 {
		data, err := readBlob()
		if err != nil {
			return nil, err
		}
		if len(data) > 0 {
			f.DrainTable = data
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
