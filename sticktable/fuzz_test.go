package sticktable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strconv"
	"testing"
	"time"
)

// FuzzReadSnapshot feeds arbitrary bytes to ReadSnapshot of a table of the
// chosen key type. Whatever the input, it must not panic, must keep the
// table consistent and usable, and may only install keys that render and
// reparse canonically. Seeds are valid snapshots of every key type. When
// the fix flag is set the input's frame checksums are recomputed first,
// so mutations reach the record decoder instead of all failing the CRC.
func FuzzReadSnapshot(f *testing.F) {
	for typ := KeyString; typ <= KeyBinary; typ++ {
		_, _, snap := snapshotSource(f, typ, 12)
		f.Add(byte(typ), false, snap)
		f.Add(byte(typ), true, snap)
		f.Add(byte(typ), false, snap[:len(snap)/2])
	}
	f.Add(byte(KeyIP), false, []byte(snapMagic+"\x01"))
	f.Fuzz(func(t *testing.T, typ byte, fix bool, data []byte) {
		kt := KeyType(typ % 5)
		if fix {
			data = reframe(data)
		}
		tab, _ := newTestTable(t, Config{Type: kt, Size: 64, Expire: time.Hour}, Options{Shards: 2})
		n, err := tab.ReadSnapshot(bytes.NewReader(data))
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrKeyType) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if n < 0 || tab.Len() > 64 {
			t.Fatalf("n=%d len=%d", n, tab.Len())
		}
		mustCheck(t, tab)
		tab.Range(func(e Entry) bool {
			k, err := tab.ParseKey(e.Key.String())
			if kt != KeyString && (err != nil || k != e.Key) {
				t.Fatalf("restored key %v does not round-trip: %v", e.Key, err)
			}
			if e.Server == "" || e.Version == 0 {
				t.Fatalf("restored entry %+v", e)
			}
			return true
		})
		// Still usable.
		k := snapKeys[kt](1)
		if _, err := tab.Store(k, "s"); err != nil {
			t.Fatal(err)
		}
		if e, ok := tab.Lookup(k); !ok || e.Server != "s" {
			t.Fatal("table unusable after restore")
		}
		var buf bytes.Buffer
		if err := tab.WriteSnapshot(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := tab.ReadSnapshot(&buf); err != nil {
			t.Fatalf("own snapshot refused: %v", err)
		}
	})
}

// FuzzParseKey checks that any text a type accepts renders to canonical
// text that parses back to the same key, and survives the byte form.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "::ffff:1.2.3.4", "2001:db8::1", "-42", "9223372036854775807", "deadBEEF", "abc", "x%y", ""} {
		for typ := range 5 {
			f.Add(byte(typ), uint8(0), s)
		}
	}
	f.Fuzz(func(t *testing.T, typ byte, n uint8, text string) {
		kt := KeyType(typ % 5)
		k, err := ParseKey(kt, int(n), text)
		if err != nil {
			if k != (Key{}) {
				t.Fatal("error with a non-zero key")
			}
			return
		}
		c := k.String()
		k2, err := ParseKey(kt, int(n), c)
		if err != nil || k2 != k {
			if kt == KeyString && n == 0 && len(c) > DefaultLen {
				t.Fatal("string key longer than its length")
			}
			t.Fatalf("%s %q -> %q -> %v, %v", kt, text, c, k2, err)
		}
		if k3, err := keyFromBytes(kt, max(int(n), DefaultLen), k.AppendBytes(nil)); err != nil || k3 != k {
			t.Fatalf("bytes round trip of %q: %v %v", text, k3, err)
		}
		if kt == KeyInteger {
			if _, err := strconv.ParseInt(c, 10, 64); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// reframe rewrites the frames of a snapshot-like input with correct
// checksums (and lengths clipped to what is there).
func reframe(data []byte) []byte {
	if len(data) < len(snapMagic)+1 {
		return data
	}
	out := bytes.Clone(data[:len(snapMagic)+1])
	rest := data[len(snapMagic)+1:]
	for len(rest) > 0 {
		size, n := binary.Uvarint(rest)
		if n <= 0 {
			break
		}
		rest = rest[n:]
		size = min(size, uint64(len(rest)))
		payload := rest[:size]
		rest = rest[size:]
		if len(rest) >= 4 {
			rest = rest[4:]
		} else {
			rest = nil
		}
		out = binary.AppendUvarint(out, size)
		out = append(out, payload...)
		out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(payload, castagnoli))
	}
	return out
}
