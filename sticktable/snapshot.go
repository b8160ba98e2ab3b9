package sticktable

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"
)

// Snapshot format, version 1. All integers are unsigned varints unless
// noted.
//
//	magic    "STKTABLE", then one byte: format version (1)
//	frames   each: length, payload, CRC-32C of the payload (4 bytes, little endian)
//
// The first frame is the header: key type (1 byte), key len, write time
// (Unix ms), expire (ms, informational), Clear watermark version and node
// (version 0: none). The following frames hold records, each a tag byte:
//
//	1 server  name                         defines the next server id (from 1)
//	2 node    name                         defines the next node id (from 0)
//	3 entry   key, server id, ttl ms, version, node id
//	4 tomb    key, ttl ms, version, node id
//	5 end     number of entry and tomb records; must end the last frame
//	6 origin  value                        the Origin of the next entry (absent: explicit)
//
// Names are strings: length, bytes. Keys are their stored bytes
// (Key.AppendBytes): fixed-size for ip (4), ipv6 (16) and integer (8),
// length-prefixed for string and binary. TTLs are remaining at write time,
// so time spent between writing and reading counts against them.
//
// Framing with a checksum per frame makes reading a stream safe without
// buffering all of it: a frame is applied only after it verified and
// parsed completely.
const (
	snapMagic   = "STKTABLE"
	snapVersion = 1

	recServer = 1
	recNode   = 2
	recEntry  = 3
	recTomb   = 4
	recEnd    = 5
	recOrigin = 6

	frameTarget = 64 << 10
	// restoreBatch is how many records ReadSnapshot applies at once
	// (about 3 MiB of them)
	restoreBatch = 32768
	frameMax     = 1 << 20
	namesMax     = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteSnapshot writes the table's entries, tombstones and Clear watermark
// to w. It walks the table like Range (small batches, locks released
// between them), so it does not stop traffic and entries changed during
// the walk may or may not be included.
func (t *Table) WriteSnapshot(w io.Writer) error {
	now := t.now()
	sw := snapWriter{w: w, servers: map[string]uint64{}, nodes: map[string]uint64{}}
	if _, err := io.WriteString(w, snapMagic+string(rune(snapVersion))); err != nil {
		return err
	}
	mv, mn := t.ClearMark()
	h := []byte{byte(t.typ)}
	h = binary.AppendUvarint(h, uint64(t.keyLen))
	h = binary.AppendUvarint(h, uint64(max(now/int64(time.Millisecond), 0)))
	h = binary.AppendUvarint(h, uint64(t.expire.Load()/int64(time.Millisecond)))
	h = binary.AppendUvarint(h, mv)
	h = appendString(h, mn)
	sw.buf = h
	if err := sw.flush(); err != nil {
		return err
	}
	// A shard at a time, in ascending order of expiry: a restore links
	// each record into its LRU list by expiry, which is O(1) for a record
	// that expires after every one before it (see ReadSnapshot), and the
	// table's scan order, by hash, is random in expiry. Frames hold at
	// most 64 KiB of one shard.
	var order []uint64
	t.eng.scan(now, true, true, func(batch []Entry) bool {
		order = byExpiry(order, batch)
		for _, o := range order {
			sw.add(&batch[o], now)
			if len(sw.buf) >= frameTarget {
				if sw.err = sw.flush(); sw.err != nil {
					return false
				}
			}
		}
		// A frame ends with its shard: a restore sorts each frame by
		// expiry, which would interleave two shards' runs, and a table
		// with fewer shards merges the runs cheaply only when they
		// arrive one after the other (see insertByExpiry).
		if len(sw.buf) > 0 {
			sw.err = sw.flush()
		}
		return sw.err == nil
	})
	if sw.err != nil {
		return sw.err
	}
	sw.buf = append(sw.buf, recEnd)
	sw.buf = binary.AppendUvarint(sw.buf, sw.count)
	return sw.flush()
}

// byExpiry returns the indices of entries in ascending order of expiry, to
// the millisecond a snapshot records, ties in their given order. Each is
// packed with its expiry into one integer (expiry relative to the
// earliest, above the index bits), so sorting is of plain integers: the
// sort costs about as much as writing the records out.
func byExpiry(order []uint64, entries []Entry) []uint64 {
	return byExpiryPacked(order, entries, indexBits)
}

// byExpiryPacked is byExpiry with bits index bits (tests use few).
func byExpiryPacked(order []uint64, entries []Entry, bits uint) []uint64 {
	order = order[:0]
	if len(entries) == 0 {
		return order
	}
	mask := uint64(1)<<bits - 1
	first := entries[0].ExpiresAt.UnixMilli()
	for i := range entries {
		first = min(first, entries[i].ExpiresAt.UnixMilli())
	}
	for i := range entries {
		rel := uint64(entries[i].ExpiresAt.UnixMilli() - first)
		if rel >= 1<<(64-bits) || uint64(i) > mask {
			// beyond what packs (a shard of millions, or expiries
			// centuries apart): index order, which is only slower to
			// restore
			order = order[:0]
			for j := range entries {
				order = append(order, uint64(j))
			}
			return order
		}
		order = append(order, rel<<bits|uint64(i))
	}
	slices.Sort(order)
	for k := range order {
		order[k] &= mask
	}
	return order
}

// indexBits is how many low bits of byExpiry's packed integers hold the
// index.
const indexBits = 24

type snapWriter struct {
	w              io.Writer
	buf            []byte
	servers, nodes map[string]uint64
	count          uint64
	err            error
}

func (sw *snapWriter) add(e *Entry, now int64) {
	var sid uint64
	if !e.Deleted {
		var ok bool
		if sid, ok = sw.servers[e.Server]; !ok {
			sid = uint64(len(sw.servers) + 1)
			sw.servers[e.Server] = sid
			sw.buf = appendString(append(sw.buf, recServer), e.Server)
		}
	}
	nid, ok := sw.nodes[e.Node]
	if !ok {
		nid = uint64(len(sw.nodes))
		sw.nodes[e.Node] = nid
		sw.buf = appendString(append(sw.buf, recNode), e.Node)
	}
	ttl := max(e.ExpiresAt.UnixNano()-now, 0)
	ttlMs := uint64((ttl + int64(time.Millisecond) - 1) / int64(time.Millisecond))
	if e.Deleted {
		sw.buf = append(sw.buf, recTomb)
	} else {
		if e.Origin != OriginExplicit {
			sw.buf = binary.AppendUvarint(append(sw.buf, recOrigin), uint64(e.Origin))
		}
		sw.buf = append(sw.buf, recEntry)
	}
	if e.Key.typ.fixedLen() == 0 {
		sw.buf = binary.AppendUvarint(sw.buf, uint64(len(e.Key.str)))
	}
	sw.buf = e.Key.AppendBytes(sw.buf)
	if !e.Deleted {
		sw.buf = binary.AppendUvarint(sw.buf, sid)
	}
	sw.buf = binary.AppendUvarint(sw.buf, ttlMs)
	sw.buf = binary.AppendUvarint(sw.buf, e.Version)
	sw.buf = binary.AppendUvarint(sw.buf, nid)
	sw.count++
}

func (sw *snapWriter) flush() error {
	frame := binary.AppendUvarint(make([]byte, 0, len(sw.buf)+14), uint64(len(sw.buf)))
	frame = append(frame, sw.buf...)
	frame = binary.LittleEndian.AppendUint32(frame, crc32.Checksum(sw.buf, castagnoli))
	sw.buf = sw.buf[:0]
	_, err := sw.w.Write(frame)
	return err
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// ReadSnapshot merges a snapshot written by WriteSnapshot into the table
// with Apply's rules (higher versions win, TTLs capped by this table's
// Expire and Retention, expired entries skipped) and returns the number
// of entries and tombstones it installed. OnChange is not called.
//
// It applies records in bulk, up to 32768 from whole frames at a time
// (one shard lock hold per run of at most 128 of a shard's records, see
// applyBatch), in ascending order of remaining life. WriteSnapshot writes each shard's records in that order
// and ends a frame with its shard, so into a table of the same shape every
// record is the newest its list has seen (linked in O(1)), and into one
// with fewer shards the writer's shards arrive as ascending runs that
// merge cheaply (see insertByExpiry). The order changes nothing but the
// cost, except into a full table, where a record evicts only entries that
// expire before it, so the order decides among ties and, with NoPurge,
// which records find room.
//
// The snapshot must have the table's key type (ErrKeyType otherwise); a
// different Len is accepted, longer keys being truncated. A snapshot that
// is corrupt or truncated yields an error wrapping ErrCorrupt: frames that
// verified before the damage have been applied (each is checksummed and
// parsed completely before any of it is applied), nothing after it is,
// and the table stays consistent. Entries refused by a full NoPurge table
// are counted in Stats.Refused and otherwise skipped.
func (t *Table) ReadSnapshot(r io.Reader) (int, error) {
	br := bufio.NewReader(r)
	var head [len(snapMagic) + 1]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return 0, snapErr("reading header", err)
	}
	if string(head[:len(snapMagic)]) != snapMagic {
		return 0, fmt.Errorf("%w: not a stick table snapshot", ErrCorrupt)
	}
	if head[len(snapMagic)] != snapVersion {
		return 0, fmt.Errorf("%w: unsupported snapshot format version %d", ErrCorrupt, head[len(snapMagic)])
	}
	frame, err := readFrame(br, nil)
	if err != nil {
		return 0, err
	}
	d := decoder{b: frame}
	typ := KeyType(d.byte())
	d.uvarint() // key len: informational, keys are truncated to ours
	written := int64(d.uvarint())
	d.uvarint() // expire: informational
	markV, markN := d.uvarint(), d.string()
	if err := d.done(); err != nil {
		return 0, err
	}
	if typ != t.typ {
		return 0, fmt.Errorf("%w: snapshot of %s keys, table has %s keys", ErrKeyType, typ, t.typ)
	}
	if markV != 0 {
		t.Apply(Change{Op: OpClear, Version: markV, Node: markN})
	}

	var (
		servers = []string{""}
		nodes   []string
		pending []Change
		scratch []bulkItem
		records uint64
		n       int
		origin  uint32 // from a recOrigin, for the next entry
	)
	// Records of verified frames wait in pending until there are enough
	// for a shard to take its share in one step (one rebuild to its final
	// size instead of one per frame): a shard's records span several
	// frames.
	// Each waits with its expiry (Unix ms, in expiresMs): its remaining
	// life is taken at the flush, so time spent reading later frames does
	// not extend it.
	var expiresMs []int64
	flush := func() {
		now := t.now()
		nowMs := now / int64(time.Millisecond)
		live := pending[:0]
		for i := range pending {
			if life := expiresMs[i] - nowMs; life > 0 {
				pending[i].TTL = time.Duration(life) * time.Millisecond
				live = append(live, pending[i])
			}
		}
		n += t.eng.applyBatch(live, now, &scratch)
		pending, expiresMs = pending[:0], expiresMs[:0]
	}
	for {
		if frame, err = readFrame(br, frame); err != nil {
			flush()
			return n, err
		}
		d = decoder{b: frame}
		verified := len(pending)
		nowMs := t.now() / int64(time.Millisecond)
		ended := false
		for d.err == nil && len(d.b) > 0 && !ended {
			switch tag := d.byte(); tag {
			case recServer, recNode:
				name := d.string()
				if len(servers)+len(nodes) >= namesMax {
					d.fail("too many names")
				} else if tag == recServer {
					servers = append(servers, name)
				} else {
					nodes = append(nodes, name)
				}
			case recOrigin:
				if v := d.uvarint(); v == 0 || v > uint64(OriginFirst) {
					d.fail("bad origin")
				} else {
					origin = uint32(v)
				}
			case recEntry, recTomb:
				c := Change{Op: OpStore}
				if tag == recTomb {
					c.Op = OpDelete
				} else {
					c.Origin = origin
				}
				origin = OriginExplicit
				c.Key = d.key(t)
				if tag == recEntry {
					if sid := d.uvarint(); sid == 0 || sid >= uint64(len(servers)) {
						d.fail("undefined server")
					} else {
						c.Server = servers[sid]
					}
				}
				ttl := d.uvarint()
				c.Version = d.uvarint()
				if nid := d.uvarint(); nid >= uint64(len(nodes)) {
					d.fail("undefined node")
				} else {
					c.Node = nodes[nid]
				}
				if c.Version == 0 {
					d.fail("zero version")
				}
				if ttl > 1<<40 {
					d.fail("ttl out of range")
				}
				// The record's expiry: what was left at write time
				// after the write (the process may have been down
				// since); flush turns it into the remaining life.
				expires := written + int64(ttl)
				records++
				// What Apply would refuse before looking at the table
				// (no life left, a bad server name) is skipped here, so
				// the batch below only holds changes Apply would take.
				if expires > nowMs && (tag == recTomb || checkServer(c.Server) == nil) {
					pending = append(pending, c)
					expiresMs = append(expiresMs, expires)
				}
			case recEnd:
				if d.uvarint() != records && d.err == nil {
					d.fail("record count mismatch")
				}
				ended = true
			default:
				d.fail(fmt.Sprintf("unknown record tag %d", tag))
			}
		}
		if err := d.done(); err != nil {
			pending, expiresMs = pending[:verified], expiresMs[:verified] // nothing of a damaged frame
			flush()
			return n, err
		}
		if ended || len(pending) >= restoreBatch {
			flush()
		}
		if ended {
			return n, nil
		}
	}
}

func snapErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated while %s: %w", ErrCorrupt, what, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("sticktable: reading snapshot: %s: %w", what, err)
}

// readFrame reads and verifies one frame, reusing buf.
func readFrame(br *bufio.Reader, buf []byte) ([]byte, error) {
	size, err := binary.ReadUvarint(br)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, snapErr("reading a frame", err)
		}
		return nil, fmt.Errorf("%w: bad frame length: %w", ErrCorrupt, err)
	}
	if size > frameMax {
		return nil, fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrCorrupt, size, frameMax)
	}
	if uint64(cap(buf)) < size+4 {
		buf = make([]byte, size+4)
	}
	buf = buf[:size+4]
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, snapErr("reading a frame", err)
	}
	payload := buf[:size]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(buf[size:]) {
		return nil, fmt.Errorf("%w: frame checksum mismatch", ErrCorrupt)
	}
	return payload, nil
}

// decoder reads one frame; the first error sticks and later reads return
// zero values, so parsing code checks once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, msg)
	}
	d.b = nil
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail("trailing bytes in frame")
	}
	return d.err
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail("short frame")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail("short frame")
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) string() string { return string(d.bytes(d.uvarint())) }

func (d *decoder) key(t *Table) Key {
	n := uint64(t.typ.fixedLen())
	if n == 0 {
		n = d.uvarint()
	}
	raw := d.bytes(n)
	if d.err != nil {
		return Key{}
	}
	k, err := t.KeyFromBytes(raw)
	if err != nil {
		d.fail(err.Error())
	}
	return k
}
