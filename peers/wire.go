package peers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/caddy-sticky/sticky/internal/hashmix"
	"github.com/caddy-sticky/sticky/sticktable"
)

// Wire format. Every message starts with a type byte; all integers are
// unsigned LEB128 varints (signed ones zigzag) unless noted, strings are a
// varint length then bytes. Messages travel inside memberlist's encrypted
// user messages, so they carry no checksum or authentication of their own.
//
// Batch (msgBatch), one table's changes:
//
//	u8 type=4, u8 flags (flagSync: sent by anti-entropy, not live)
//	str table, u8 keyType, varint keyLen (the table's shape: a receiver
//	                               whose table differs refuses the batch;
//	                               ip, ipv6 and integer keys have fixed
//	                               sizes, the others are length-prefixed)
//	varint nNames, nNames × str   (dictionary of node and server names;
//	                               names[0] is the sender)
//	varint baseVersion, varint ageMs, varint count, count × entry
//
// ageMs is how long the batch took to build, from its first change to
// its encoding: TTLs are remaining life when each change was taken, and
// the receiver deducts the age (a duration on the sender's own clock, so
// clock offsets do not matter), as it deducts its own time spent applying
// earlier changes of the batch. Without that, a node's estimate of a
// peer's entry was systematically fresher than the peer's own, and full
// tables, which evict by that estimate, never agreed on what to keep.
//
// entry:
//
//	u8 op
//	key      (not for clear): fixed-size bytes, or varint len + bytes
//	server   (store, refresh, pin): varint index into names
//	node     varint index into names
//	version  zigzag varint, difference from baseVersion
//	ttl      (not for clear): varint milliseconds remaining
//	origin   (store, refresh, pin): varint, Change.Origin + 1 modulo 2^32
//	         (placement or explicit change), so the common first
//	         placement (OriginFirst) and explicit change take one byte
//
// With ip or integer keys an update costs 13 to 20 bytes; the dictionary
// makes server and node names one byte each however long they are.
//
// Leave (msgLeave), sent best-effort by a node closing its group, so the
// others list it as left rather than dead: u8 type=3, str node name.
//
// Digest (msgDigest), carried by push/pull and by direct requests:
//
//	u8 type=5, u8 flags (flagReply: answer with your own digest)
//	str sender name, str sender address (host:port)
//	varint nTables, nTables × (str name, u8 keyType, varint keyLen,
//	                           varint clearVersion, str clearNode, u8 bits,
//	                           u64 salt (little endian),
//	                           2^bits × u32 little-endian folded sums)
//
// A bucket's sum is 64 bits; the wire carries 32 bits of it mixed with a
// salt the sender draws for each digest (foldSum), which halves the
// digest, the whole cost of a round between tables that agree. Two
// different sums look equal with probability 2^-32, and not again in the
// next round, whose salt differs, so a collision delays a repair by one
// round instead of hiding it for good.
//
// Types 1 and 2 were the batch and digest of the format before origins
// and table shapes; they are refused as unknown, so a node never merges
// by rules it does not share.

// Message types, flags and the limits decoders enforce.
const (
	msgBatch  = 4
	msgDigest = 5
	msgLeave  = 3 // u8 type, str node name: "I am leaving on purpose"

	flagSync  = 1 // batch: anti-entropy repair, not a live change
	flagReply = 1 // digest: the receiver should answer with its digest

	// A table's digest has 2^bits buckets, bits in [MinBucketBits,
	// MaxBucketBits], chosen from the table's size (see bucketBitsFor).
	MinBucketBits = 4
	MaxBucketBits = 12

	maxNameLen   = 255                          // node and table names
	maxServerLen = 1024                         // server identities in a batch dictionary
	maxAddrLen   = 300                          // host:port in a digest
	maxNames     = 4096                         // dictionary entries in one batch
	maxKeyLen    = 65535                        // sticktable.MaxLen
	maxTables    = 1024                         // tables in one digest
	minEntryLen  = 3                            // op, node, version: a clear, the smallest entry
	minDigestLen = 5 + 1 + 8 + 4<<MinBucketBits // smallest table in a digest
	maxBatchLen  = 1 << 20                      // 4 × syncLimit; a single change with the largest key fits
)

var errShort = errors.New("truncated message")

// reader decodes with bounds checks; the first error sticks, so callers
// check once at the end and a hostile message can never index out of
// range or make it allocate more than the message's own size.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errShort
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns the next n bytes, a view into the message.
func (r *reader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

// str reads a string of at most max bytes.
func (r *reader) str(max int, what string) string {
	n := r.uvarint()
	if n > uint64(max) {
		r.fail("%s of %d bytes exceeds %d", what, n, max)
		return ""
	}
	return string(r.bytes(n))
}

// bucketOf maps a key hash to its digest bucket (the top bits).
func bucketOf(keyHash uint64, bits uint8) int { return int(keyHash >> (64 - bits)) }

// bucketBitsFor picks the bucket count for a table of n entries. A
// digest costs 4 bytes a bucket (8 when this was tuned); a difference costs every entry of its
// bucket (~20 bytes each, n/buckets of them). For a handful of differing
// keys the total is smallest near sqrt(12n) buckets (rounded down to a
// power of two): 256 for ten thousand entries, 2048 (a 16 KiB digest) for
// a million, 4096 from 1.4 million.
func bucketBitsFor(n int) uint8 {
	b := uint8(MinBucketBits)
	for b < MaxBucketBits && float64(uint64(1)<<(2*b+2)) <= 12*float64(n) {
		b++
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// tableShape is what two nodes' tables must share for their entries to
// mean the same: the key type and, for string and binary keys, the length
// keys are truncated to.
type tableShape struct {
	typ    sticktable.KeyType
	keyLen int // 0 for the fixed-size types
}

func shapeOf(t *sticktable.Table) tableShape {
	c := t.Config()
	return tableShape{typ: c.Type, keyLen: c.Len}
}

// fixed is the key size of fixed-size key types, else 0.
func (s tableShape) fixed() int {
	switch s.typ {
	case sticktable.KeyIP:
		return 4
	case sticktable.KeyIPv6:
		return 16
	case sticktable.KeyInteger:
		return 8
	}
	return 0
}

func (s tableShape) String() string {
	if s.keyLen != 0 {
		return fmt.Sprintf("%s len %d", s.typ, s.keyLen)
	}
	return s.typ.String()
}

// batchEncoder builds batch messages of at most limit bytes for one table.
type batchEncoder struct {
	table  string
	sender string
	shape  tableShape
	fixed  int // key length for fixed-size key types, else 0
	flags  byte
	limit  int

	names    []string
	index    map[string]int
	namesLen int // encoded size of the dictionary
	base     uint64
	count    int
	body     []byte
	first    time.Time // when the first change of the batch was added
}

func newBatchEncoder(table, sender string, shape tableShape, flags byte, limit int) *batchEncoder {
	e := &batchEncoder{table: table, sender: sender, shape: shape, fixed: shape.fixed(), flags: flags, limit: limit, index: map[string]int{}}
	e.reset()
	return e
}

// maxTTL bounds a TTL on the wire; longer ones are clamped when sent and
// refused when received. maxAge bounds a batch's age (three bytes).
const (
	maxTTL = 100 * 365 * 24 * time.Hour
	maxAge = (1<<21 - 1) * time.Millisecond
)

func (e *batchEncoder) reset() {
	clear(e.index)
	e.names = e.names[:0]
	e.namesLen = 0
	e.count = 0
	e.body = e.body[:0]
	e.base = 0
	e.name(e.sender)
}

func (e *batchEncoder) name(s string) int {
	if i, ok := e.index[s]; ok {
		return i
	}
	i := len(e.names)
	e.names = append(e.names, s)
	e.index[s] = i
	e.namesLen += uvarintLen(uint64(len(s))) + len(s)
	return i
}

func (e *batchEncoder) headerLen() int {
	return 3 + uvarintLen(uint64(len(e.table))) + len(e.table) + uvarintLen(uint64(e.shape.keyLen)) +
		uvarintLen(uint64(len(e.names))) + e.namesLen + uvarintLen(e.base) + 3 + uvarintLen(uint64(e.count))
}

// add appends one change. It returns false, leaving the batch as it was,
// when the change would push a non-empty batch past the limit; the caller
// then finishes the batch and adds the change to a fresh one. A change
// whose names or key cannot travel is dropped (returns true): peers
// would refuse it anyway.
func (e *batchEncoder) add(c *sticktable.Change) bool {
	if len(c.Node) > maxServerLen || len(c.Server) > maxServerLen {
		return true
	}
	if e.count == 0 {
		e.base = c.Version
		e.first = time.Now()
	}
	bodyMark, nNames, namesLen := len(e.body), len(e.names), e.namesLen
	e.body = append(e.body, byte(c.Op))
	if c.Op != sticktable.OpClear {
		e.body = c.Key.AppendBytes(e.body)
		klen := len(e.body) - bodyMark - 1
		if klen == 0 || klen > maxKeyLen || (e.fixed != 0 && klen != e.fixed) {
			e.body = e.body[:bodyMark]
			return true
		}
		if e.fixed == 0 {
			// Insert the length prefix before the key bytes.
			var tmp [binary.MaxVarintLen64]byte
			p := binary.PutUvarint(tmp[:], uint64(klen))
			e.body = append(e.body, tmp[:p]...)
			copy(e.body[bodyMark+1+p:], e.body[bodyMark+1:bodyMark+1+klen])
			copy(e.body[bodyMark+1:], tmp[:p])
		}
	}
	switch c.Op {
	case sticktable.OpStore, sticktable.OpRefresh, sticktable.OpPin:
		e.body = binary.AppendUvarint(e.body, uint64(e.name(c.Server)))
	}
	e.body = binary.AppendUvarint(e.body, uint64(e.name(c.Node)))
	e.body = binary.AppendVarint(e.body, int64(c.Version-e.base))
	if c.Op != sticktable.OpClear {
		// receivers refuse longer TTLs, and cap what they accept by their
		// own expire and retention anyway, so clamp rather than lose the
		// whole batch (a tombstone keeps twice the table's expire)
		e.body = binary.AppendUvarint(e.body, uint64(min(max(c.TTL, 0), maxTTL)/time.Millisecond))
	}
	switch c.Op {
	case sticktable.OpStore, sticktable.OpRefresh, sticktable.OpPin:
		e.body = binary.AppendUvarint(e.body, uint64(c.Origin+1))
	}
	e.count++
	if e.count > 1 && e.headerLen()+len(e.body) > e.limit || len(e.names) > maxNames {
		e.count--
		e.body = e.body[:bodyMark]
		for _, s := range e.names[nNames:] {
			delete(e.index, s)
		}
		e.names, e.namesLen = e.names[:nNames], namesLen
		return false
	}
	return true
}

// finish appends the encoded batch to dst and resets the encoder.
func (e *batchEncoder) finish(dst []byte) []byte {
	dst = append(dst, msgBatch, e.flags)
	dst = appendStr(dst, e.table)
	dst = append(dst, byte(e.shape.typ))
	dst = binary.AppendUvarint(dst, uint64(e.shape.keyLen))
	dst = binary.AppendUvarint(dst, uint64(len(e.names)))
	for _, s := range e.names {
		dst = appendStr(dst, s)
	}
	dst = binary.AppendUvarint(dst, e.base)
	age := time.Duration(0)
	if e.count > 0 {
		age = min(time.Since(e.first), maxAge)
	}
	dst = binary.AppendUvarint(dst, uint64(age/time.Millisecond))
	dst = binary.AppendUvarint(dst, uint64(e.count))
	dst = append(dst, e.body...)
	e.reset()
	return dst
}

// rawChange is a decoded entry; key is a view into the message.
type rawChange struct {
	op      sticktable.Op
	key     []byte
	server  int
	node    int
	version uint64
	ttl     time.Duration
	origin  uint32
}

// batch is a decoded batch message.
type batch struct {
	flags   byte
	table   string
	shape   tableShape
	fixed   int
	names   []string
	base    uint64
	age     time.Duration
	changes []rawChange
}

// decodeBatch decodes and fully validates a batch message, so a message
// is applied entirely or not at all.
func decodeBatch(msg []byte) (*batch, error) {
	if len(msg) > maxBatchLen {
		// Decoded entries take more memory than their bytes; bounding
		// the input bounds that too, whatever memberlist lets through.
		return nil, fmt.Errorf("batch of %d bytes exceeds %d", len(msg), maxBatchLen)
	}
	r := reader{b: msg}
	if r.byte() != msgBatch {
		return nil, errors.New("not a batch")
	}
	b := &batch{flags: r.byte()}
	b.table = r.str(maxNameLen, "table name")
	b.shape.typ = sticktable.KeyType(r.byte())
	keyLen := r.uvarint()
	if r.err == nil && (b.shape.typ > sticktable.KeyBinary || keyLen > maxKeyLen || (keyLen != 0) != b.shape.typ.HasLen()) {
		r.fail("bad table shape %d/%d", b.shape.typ, keyLen)
	}
	b.shape.keyLen = int(keyLen)
	b.fixed = b.shape.fixed()
	n := r.uvarint()
	if r.err == nil && (n == 0 || n > maxNames || n > uint64(len(r.b))) {
		r.fail("bad dictionary size %d", n)
	}
	if r.err != nil {
		return nil, r.err
	}
	b.names = make([]string, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		b.names = append(b.names, r.str(maxServerLen, "name"))
	}
	b.base = r.uvarint()
	if age := r.uvarint(); age > uint64(maxAge/time.Millisecond) {
		r.fail("batch age %d ms", age)
	} else {
		b.age = time.Duration(age) * time.Millisecond
	}
	count := r.uvarint()
	if r.err == nil && (count == 0 || count > uint64(len(r.b)/minEntryLen)) {
		r.fail("bad entry count %d for %d bytes", count, len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	b.changes = make([]rawChange, count)
	for i := range b.changes {
		c := &b.changes[i]
		c.op = sticktable.Op(r.byte())
		switch c.op {
		case sticktable.OpStore, sticktable.OpRefresh, sticktable.OpPin, sticktable.OpDelete:
			kl := uint64(b.fixed)
			if kl == 0 {
				kl = r.uvarint()
				if r.err == nil && (kl == 0 || kl > maxKeyLen) {
					r.fail("bad key length %d", kl)
				}
			}
			c.key = r.bytes(kl)
		case sticktable.OpClear:
		default:
			r.fail("unknown op %d", c.op)
		}
		c.server = -1
		switch c.op {
		case sticktable.OpStore, sticktable.OpRefresh, sticktable.OpPin:
			c.server = int(min(r.uvarint(), uint64(len(b.names))))
			if c.server >= len(b.names) {
				r.fail("server index out of range")
			}
		}
		c.node = int(min(r.uvarint(), uint64(len(b.names))))
		if c.node >= len(b.names) {
			r.fail("node index out of range")
		}
		c.version = b.base + uint64(r.varint())
		if c.version == 0 {
			r.fail("zero version")
		}
		if c.op != sticktable.OpClear {
			ms := r.uvarint()
			if ms > uint64(maxTTL/time.Millisecond) {
				r.fail("ttl out of range")
			}
			c.ttl = time.Duration(ms) * time.Millisecond
		}
		switch c.op {
		case sticktable.OpStore, sticktable.OpRefresh, sticktable.OpPin:
			o := r.uvarint()
			if o > uint64(sticktable.OriginFirst) {
				r.fail("origin out of range")
			}
			c.origin = uint32(o) - 1
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return b, nil
}

// sender is the name of the node that sent the batch.
func (b *batch) sender() string { return b.names[0] }

// tableDigest summarizes one table: its Clear watermark and the bucket
// sums of its entries and tombstones.
type tableDigest struct {
	name        string
	shape       tableShape
	markVersion uint64
	markNode    string
	bits        uint8
	buckets     []uint64 // 1 << bits; sums, or folded sums when folded
	// folded marks a decoded digest, whose buckets are foldSum(sum, salt)
	folded bool
	salt   uint64
}

// foldSum mixes a bucket sum with a salt down to the 32 bits that travel.
func foldSum(sum, salt uint64) uint64 { return uint64(uint32(hashmix.Fmix64(sum ^ salt))) }

// bucketDiffers compares our bucket j (a sum) with theirs (folded).
func (t *tableDigest) bucketDiffers(j int, theirs *tableDigest) bool {
	return foldSum(t.buckets[j], theirs.salt) != theirs.buckets[j]
}

// digest is a decoded digest message.
type digest struct {
	flags  byte
	sender string
	addr   string
	tables []tableDigest
}

func (d *digest) encode(dst []byte) []byte {
	dst = append(dst, msgDigest, d.flags)
	dst = appendStr(dst, d.sender)
	dst = appendStr(dst, d.addr)
	dst = binary.AppendUvarint(dst, uint64(len(d.tables)))
	for i := range d.tables {
		t := &d.tables[i]
		dst = appendStr(dst, t.name)
		dst = append(dst, byte(t.shape.typ))
		dst = binary.AppendUvarint(dst, uint64(t.shape.keyLen))
		dst = binary.AppendUvarint(dst, t.markVersion)
		dst = appendStr(dst, t.markNode)
		dst = append(dst, t.bits)
		salt := t.salt
		if !t.folded {
			salt = rand.Uint64()
		}
		dst = binary.LittleEndian.AppendUint64(dst, salt)
		for _, s := range t.buckets {
			if !t.folded {
				s = foldSum(s, salt)
			}
			dst = binary.LittleEndian.AppendUint32(dst, uint32(s))
		}
	}
	return dst
}

func decodeDigest(msg []byte) (*digest, error) {
	r := reader{b: msg}
	if r.byte() != msgDigest {
		return nil, errors.New("not a digest")
	}
	d := &digest{flags: r.byte()}
	d.sender = r.str(maxNameLen, "sender")
	d.addr = r.str(maxAddrLen, "address")
	n := r.uvarint()
	if r.err == nil && (n > maxTables || n > uint64(len(r.b)/minDigestLen)) {
		r.fail("bad table count %d", n)
	}
	if r.err != nil {
		return nil, r.err
	}
	d.tables = make([]tableDigest, n)
	for i := range d.tables {
		t := &d.tables[i]
		t.name = r.str(maxNameLen, "table name")
		t.shape.typ = sticktable.KeyType(r.byte())
		keyLen := r.uvarint()
		if r.err == nil && (t.shape.typ > sticktable.KeyBinary || keyLen > maxKeyLen || (keyLen != 0) != t.shape.typ.HasLen()) {
			r.fail("bad table shape %d/%d", t.shape.typ, keyLen)
		}
		t.shape.keyLen = int(keyLen)
		t.markVersion = r.uvarint()
		t.markNode = r.str(maxServerLen, "node")
		t.bits = r.byte()
		if r.err == nil && (t.bits < MinBucketBits || t.bits > MaxBucketBits) {
			r.fail("bad bucket bits %d", t.bits)
		}
		salt := r.bytes(8)
		raw := r.bytes(4 << t.bits)
		if r.err != nil {
			return nil, r.err
		}
		t.folded, t.salt = true, binary.LittleEndian.Uint64(salt)
		t.buckets = make([]uint64, 1<<t.bits)
		for j := range t.buckets {
			t.buckets[j] = uint64(binary.LittleEndian.Uint32(raw[4*j:]))
		}
	}
	if d.sender == "" {
		return nil, errors.New("digest without sender")
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return d, nil
}

func encodeLeave(name string) []byte { return appendStr([]byte{msgLeave}, name) }

func decodeLeave(msg []byte) (string, error) {
	r := reader{b: msg}
	if r.byte() != msgLeave {
		return "", errors.New("not a leave")
	}
	name := r.str(maxNameLen, "name")
	if r.err == nil && (name == "" || len(r.b) != 0) {
		r.fail("bad leave message")
	}
	return name, r.err
}
