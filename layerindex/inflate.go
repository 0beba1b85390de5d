package layerindex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// inflater decodes a gzip stream (one or more members) from a blobReader,
// and unlike compress/flate it can stop at any deflate block boundary, tell
// where it is (bit offset in the blob, uncompressed offset, last 32 KiB of
// output) and later resume there: the zran technique.
//
// Corrupt or truncated input is an error, never output: codes are checked
// as they are read, back-references never reach before the known window, and
// each member's CRC-32 and size are checked when the member was decoded from
// its start.
type inflater struct {
	in    *blobReader
	bits  uint64 // bits not yet consumed, LSB first; bits above nbits mirror the next input bytes or are 0
	nbits uint
	inEOF bool

	hist    []byte // output history and not yet handed out output
	hpos    int    // end of decoded output in hist
	rpos    int    // next byte of hist to hand out
	outBase int64  // uncompressed offset of hist[0]

	state  int
	final  bool
	stored int        // bytes left in the current stored block
	lit    *huffTable // fixedLit or &litOwn
	dist   *huffTable
	litOwn huffTable
	dstOwn huffTable
	clen   huffTable
	lens   [maxLitCodes + maxDistCodes]uint8

	crc      uint32 // CRC-32 of the current member's output up to crcPos
	crcPos   int
	msize    uint32 // bytes of the current member's output, mod 2^32
	crcValid bool   // the member was decoded from its start, so crc and msize are checkable

	// onBlock, if set, is called at the start of every deflate block, when
	// the state can be saved with checkpoint().
	onBlock func()
}

const (
	windowSize   = 32 << 10
	maxMatch     = 258
	histSize     = windowSize + 256<<10
	maxLitCodes  = 286
	maxDistCodes = 30
)

const (
	stMember  = iota // a gzip member header is next (or the end)
	stBlock          // a deflate block header is next
	stStored         // inside a stored block
	stHuffman        // inside a Huffman block
	stTrailer        // the member's trailer is next
	stDone
)

var (
	errTruncated = errors.New("gzip stream truncated")
	errCorrupt   = errors.New("gzip stream corrupt")
)

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, a...))
}

// newInflater starts at the beginning of a gzip stream.
func newInflater(in *blobReader) *inflater {
	return &inflater{in: in, hist: make([]byte, histSize), state: stMember}
}

// resumeInflater starts at a deflate block that begins at bit cbit of the
// blob, with window the output before it, at uncompressed offset uoff. in
// must be positioned at byte cbit/8.
func resumeInflater(in *blobReader, cbit, uoff int64, window []byte) (*inflater, error) {
	return resumeInflaterInto(nil, in, cbit, uoff, window)
}

// resumeInflaterInto is resumeInflater reusing hist (from an earlier
// inflater that is no longer used) when it is large enough.
func resumeInflaterInto(hist []byte, in *blobReader, cbit, uoff int64, window []byte) (*inflater, error) {
	if len(hist) < histSize {
		hist = make([]byte, histSize)
	}
	f := &inflater{in: in, hist: hist[:histSize], state: stBlock}
	f.hpos = copy(f.hist, window)
	f.rpos, f.crcPos = f.hpos, f.hpos
	f.outBase = uoff - int64(f.hpos)
	if skip := uint(cbit & 7); skip > 0 {
		if err := f.need(skip); err != nil {
			return nil, err
		}
		f.drop(skip)
	}
	return f, nil
}

// uoff is the uncompressed offset of the next byte read returns.
func (f *inflater) uoff() int64 { return f.outBase + int64(f.rpos) }

// bitOffset is the blob bit offset of the next unconsumed input bit.
func (f *inflater) bitOffset() int64 { return f.in.offset()*8 - int64(f.nbits) }

// window returns a copy of the output before the current decode position,
// up to 32 KiB. Valid at a block boundary, when all output was read.
func (f *inflater) window() []byte {
	start := max(0, f.hpos-windowSize)
	return append([]byte(nil), f.hist[start:f.hpos]...)
}

// read hands out decoded output; io.EOF after the last member.
func (f *inflater) read(p []byte) (int, error) {
	for f.rpos == f.hpos {
		if f.state == stDone {
			return 0, io.EOF
		}
		if err := f.decode(); err != nil {
			return 0, err
		}
	}
	n := copy(p, f.hist[f.rpos:f.hpos])
	f.rpos += n
	return n, nil
}

// slide keeps the last 32 KiB of history when the buffer is nearly full.
func (f *inflater) slide() {
	if f.hpos+maxMatch <= len(f.hist) {
		return
	}
	f.updateCRC()
	keep := min(f.hpos, windowSize)
	copy(f.hist, f.hist[f.hpos-keep:f.hpos])
	f.outBase += int64(f.hpos - keep)
	f.hpos, f.rpos, f.crcPos = keep, keep, keep
}

func (f *inflater) updateCRC() {
	if f.crcPos < f.hpos {
		f.crc = crc32.Update(f.crc, crc32.IEEETable, f.hist[f.crcPos:f.hpos])
		f.msize += uint32(f.hpos - f.crcPos)
		f.crcPos = f.hpos
	}
}

// decode makes progress: some output, or a state change. Called with all
// output handed out.
func (f *inflater) decode() error {
	f.slide()
	for f.hpos == f.rpos {
		var err error
		switch f.state {
		case stMember:
			err = f.member()
		case stBlock:
			if f.onBlock != nil && !f.final {
				f.onBlock()
			}
			err = f.blockHeader()
		case stStored:
			err = f.storedData()
		case stHuffman:
			err = f.huffman()
		case stTrailer:
			err = f.trailer()
		case stDone:
			return nil
		}
		if err != nil {
			f.state = stDone
			return err
		}
		if f.hpos+maxMatch > len(f.hist) {
			return nil
		}
	}
	return nil
}

// refill tops up the bit buffer from the input; at the end of input it
// leaves what there is (need reports the shortage).
func (f *inflater) refill() error {
	in := f.in
	for f.nbits <= 56 {
		if in.pos+8 <= len(in.buf) {
			f.bits |= binary.LittleEndian.Uint64(in.buf[in.pos:]) << f.nbits
			in.pos += int(63-f.nbits) >> 3
			f.nbits |= 56
			return nil
		}
		if in.pos < len(in.buf) {
			f.bits |= uint64(in.buf[in.pos]) << f.nbits
			in.pos++
			f.nbits += 8
			continue
		}
		if f.inEOF {
			return nil
		}
		if err := in.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				f.inEOF = true
				return nil
			}
			return err
		}
	}
	return nil
}

func (f *inflater) need(n uint) error {
	if f.nbits >= n {
		return nil
	}
	if err := f.refill(); err != nil {
		return err
	}
	if f.nbits < n {
		return errTruncated
	}
	return nil
}

func (f *inflater) drop(n uint) {
	f.bits >>= n
	f.nbits -= n
}

func (f *inflater) getBits(n uint) (uint32, error) {
	if err := f.need(n); err != nil {
		return 0, err
	}
	v := uint32(f.bits & (1<<n - 1))
	f.drop(n)
	return v, nil
}

// alignByte drops the bits up to the next byte boundary and clears the bits
// above nbits, so input can be taken straight from the blobReader.
func (f *inflater) alignByte() {
	f.drop(f.nbits & 7)
	f.bits &= 1<<f.nbits - 1
}

// member reads a gzip member header, or ends the stream if input ended.
func (f *inflater) member() error {
	if err := f.refill(); err != nil {
		return err
	}
	if f.nbits == 0 {
		f.state = stDone
		return nil
	}
	var hdr [10]byte
	for i := range hdr {
		b, err := f.getBits(8)
		if err != nil {
			return fmt.Errorf("gzip header: %w", err)
		}
		hdr[i] = byte(b)
	}
	if hdr[0] != 0x1f || hdr[1] != 0x8b {
		return corrupt("bad gzip magic %x at byte %d", hdr[:2], f.bitOffset()/8-10)
	}
	if hdr[2] != 8 {
		return corrupt("gzip compression method %d, want 8 (deflate)", hdr[2])
	}
	flg := hdr[3]
	skip := func(n int) error {
		for ; n > 0; n-- {
			if _, err := f.getBits(8); err != nil {
				return fmt.Errorf("gzip header: %w", err)
			}
		}
		return nil
	}
	skipString := func() error {
		for {
			b, err := f.getBits(8)
			if err != nil {
				return fmt.Errorf("gzip header: %w", err)
			}
			if b == 0 {
				return nil
			}
		}
	}
	if flg&0x04 != 0 { // FEXTRA
		n, err := f.getBits(16)
		if err != nil {
			return fmt.Errorf("gzip header: %w", err)
		}
		if err := skip(int(n)); err != nil {
			return err
		}
	}
	if flg&0x08 != 0 { // FNAME
		if err := skipString(); err != nil {
			return err
		}
	}
	if flg&0x10 != 0 { // FCOMMENT
		if err := skipString(); err != nil {
			return err
		}
	}
	if flg&0x02 != 0 { // FHCRC
		if err := skip(2); err != nil {
			return err
		}
	}
	f.updateCRC()
	f.crc, f.msize, f.crcValid = 0, 0, true
	f.final = false
	f.state = stBlock
	return nil
}

func (f *inflater) trailer() error {
	f.updateCRC()
	f.alignByte()
	crc, err := f.getBits(32)
	if err != nil {
		return fmt.Errorf("gzip trailer: %w", err)
	}
	size, err := f.getBits(32)
	if err != nil {
		return fmt.Errorf("gzip trailer: %w", err)
	}
	if f.crcValid && (crc != f.crc || size != f.msize) {
		return corrupt("gzip member checksum: got crc %08x size %d, trailer says crc %08x size %d", f.crc, f.msize, crc, size)
	}
	f.state = stMember
	return nil
}

func (f *inflater) blockHeader() error {
	if f.final {
		f.state = stTrailer
		return nil
	}
	h, err := f.getBits(3)
	if err != nil {
		return err
	}
	f.final = h&1 == 1
	switch h >> 1 {
	case 0:
		f.alignByte()
		v, err := f.getBits(32)
		if err != nil {
			return err
		}
		if uint16(v) != ^uint16(v>>16) {
			return corrupt("stored block length %04x does not match its complement %04x", uint16(v), uint16(v>>16))
		}
		f.stored = int(uint16(v))
		f.state = stStored
	case 1:
		f.lit, f.dist = &fixedLit, &fixedDist
		f.state = stHuffman
	case 2:
		if err := f.dynamicTables(); err != nil {
			return err
		}
		f.lit, f.dist = &f.litOwn, &f.dstOwn
		f.state = stHuffman
	default:
		return corrupt("reserved deflate block type 3")
	}
	return nil
}

func (f *inflater) storedData() error {
	for f.stored > 0 && f.hpos < len(f.hist) {
		// First the whole bytes still in the bit buffer, then straight from input.
		if f.nbits >= 8 {
			f.hist[f.hpos] = byte(f.bits)
			f.hpos++
			f.drop(8)
			f.stored--
			continue
		}
		f.bits = 0 // the bytes it mirrored are taken straight from input now
		in := f.in
		if in.pos >= len(in.buf) {
			if err := in.fill(); err != nil {
				if errors.Is(err, io.EOF) {
					return errTruncated
				}
				return err
			}
		}
		n := copy(f.hist[f.hpos:min(len(f.hist), f.hpos+f.stored)], in.buf[in.pos:])
		in.pos += n
		f.hpos += n
		f.stored -= n
	}
	if f.stored == 0 {
		f.state = stBlock
	}
	return nil
}

var codeLengthOrder = [19]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

func (f *inflater) dynamicTables() error {
	v, err := f.getBits(14)
	if err != nil {
		return err
	}
	nlit, ndist, nclen := int(v&31)+257, int(v>>5&31)+1, int(v>>10)+4
	if nlit > maxLitCodes || ndist > maxDistCodes {
		return corrupt("dynamic block with %d literal/length and %d distance codes", nlit, ndist)
	}
	var cl [19]uint8
	for i := 0; i < nclen; i++ {
		b, err := f.getBits(3)
		if err != nil {
			return err
		}
		cl[codeLengthOrder[i]] = uint8(b)
	}
	if err := f.clen.build(cl[:], 7); err != nil {
		return corrupt("code length code: %v", err)
	}
	lens := f.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		sym, err := f.decodeSym(&f.clen)
		if err != nil {
			return err
		}
		var rep int
		var val uint8
		switch {
		case sym < 16:
			lens[i] = uint8(sym)
			i++
			continue
		case sym == 16:
			if i == 0 {
				return corrupt("repeat of a code length with none before")
			}
			b, err := f.getBits(2)
			if err != nil {
				return err
			}
			rep, val = 3+int(b), lens[i-1]
		case sym == 17:
			b, err := f.getBits(3)
			if err != nil {
				return err
			}
			rep = 3 + int(b)
		default:
			b, err := f.getBits(7)
			if err != nil {
				return err
			}
			rep = 11 + int(b)
		}
		if i+rep > len(lens) {
			return corrupt("code lengths repeat past their end")
		}
		for ; rep > 0; rep-- {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return corrupt("no end-of-block code")
	}
	if err := f.litOwn.build(lens[:nlit], litBits); err != nil {
		return corrupt("literal/length code: %v", err)
	}
	if err := f.dstOwn.build(lens[nlit:], distBits); err != nil {
		return corrupt("distance code: %v", err)
	}
	return nil
}

// decodeSym reads one symbol, slowly and carefully (table headers only).
func (f *inflater) decodeSym(h *huffTable) (int, error) {
	if err := f.refill(); err != nil {
		return 0, err
	}
	e := h.lookup(f.bits)
	if e&kindMask != 0 {
		return 0, corrupt("invalid Huffman code")
	}
	n := uint(e & lenMask)
	if n > f.nbits {
		return 0, errTruncated
	}
	f.drop(n)
	return int(e >> 16), nil
}

var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// huffman decodes a Huffman block until it ends or the buffer is full. The
// hot loop keeps its state in locals.
func (f *inflater) huffman() error {
	hist := f.hist
	hpos := f.hpos
	limit := len(hist) - maxMatch
	bits, nbits := f.bits, f.nbits
	in := f.in
	lt, lmask, lsh := f.lit.t, uint64(1)<<f.lit.primary-1, f.lit.primary
	dt, dmask, dsh := f.dist.t, uint64(1)<<f.dist.primary-1, f.dist.primary
	var err error
	for hpos <= limit {
		if nbits < 48 {
			if in.pos+8 <= len(in.buf) {
				bits |= binary.LittleEndian.Uint64(in.buf[in.pos:]) << nbits
				in.pos += int(63-nbits) >> 3
				nbits |= 56
			} else {
				f.bits, f.nbits = bits, nbits
				if err = f.refill(); err != nil {
					break
				}
				bits, nbits = f.bits, f.nbits
			}
		}
		e := lt[bits&lmask]
		if e&kindMask != 0 {
			if e&kindMask != kindLink {
				err = corrupt("invalid literal/length code")
				break
			}
			e = lt[int(e>>16)+int(bits>>lsh&(1<<(e&lenMask)-1))]
			if e&kindMask != 0 {
				err = corrupt("invalid literal/length code")
				break
			}
		}
		n := uint(e & lenMask)
		if n > nbits {
			err = errTruncated
			break
		}
		bits >>= n
		nbits -= n
		sym := int(e >> 16)
		if sym < 256 {
			hist[hpos] = byte(sym)
			hpos++
			continue
		}
		if sym == 256 {
			f.state = stBlock
			break
		}
		sym -= 257
		if sym >= len(lengthBase) {
			err = corrupt("invalid length symbol %d", sym+257)
			break
		}
		xb := uint(lengthExtra[sym])
		if xb > nbits {
			err = errTruncated
			break
		}
		length := int(lengthBase[sym]) + int(bits&(1<<xb-1))
		bits >>= xb
		nbits -= xb

		e = dt[bits&dmask]
		if e&kindMask != 0 {
			if e&kindMask != kindLink {
				err = corrupt("invalid distance code")
				break
			}
			e = dt[int(e>>16)+int(bits>>dsh&(1<<(e&lenMask)-1))]
			if e&kindMask != 0 {
				err = corrupt("invalid distance code")
				break
			}
		}
		n = uint(e & lenMask)
		if n > nbits {
			err = errTruncated
			break
		}
		bits >>= n
		nbits -= n
		dsym := int(e >> 16)
		if dsym >= len(distBase) {
			err = corrupt("invalid distance symbol %d", dsym)
			break
		}
		xb = uint(distExtra[dsym])
		if xb > nbits {
			err = errTruncated
			break
		}
		dist := int(distBase[dsym]) + int(bits&(1<<xb-1))
		bits >>= xb
		nbits -= xb
		if dist > hpos {
			err = corrupt("back-reference %d bytes before the start of the window", dist)
			break
		}
		switch {
		case dist >= 8 && length <= 64 && hpos+length+8 <= len(hist):
			// Most matches are short: 8 bytes at a time, inline, beats a
			// memmove call. Each word read lies before the one written
			// (dist >= 8), so overlapping matches repeat as they must;
			// the up to 7 bytes written past the match are not output
			// yet and get overwritten.
			src := hpos - dist
			for k := 0; k < length; k += 8 {
				binary.LittleEndian.PutUint64(hist[hpos+k:], binary.LittleEndian.Uint64(hist[src+k:]))
			}
		case dist >= length:
			copy(hist[hpos:hpos+length], hist[hpos-dist:])
		default:
			// Overlapping: the copied run doubles each round.
			for k := 0; k < length; {
				k += copy(hist[hpos+k:hpos+length], hist[hpos-dist:hpos+k])
			}
		}
		hpos += length
	}
	f.hpos = hpos
	f.bits, f.nbits = bits, nbits
	return err
}

// huffTable decodes canonical Huffman codes read LSB first: a primary table
// indexed by the next `primary` bits, with links to sub-tables for longer
// codes. Entries: symbol<<16 | kind | code length.
type huffTable struct {
	t       []uint32
	primary uint
}

const (
	litBits  = 10
	distBits = 8
	lenMask  = 0xff
	kindMask = 0xff00
	kindLink = 0x0100 // symbol field is the sub-table start, length field its index bits
	kindBad  = 0x0200 // no code has these bits
)

func (h *huffTable) lookup(bits uint64) uint32 {
	e := h.t[bits&(1<<h.primary-1)]
	if e&kindMask == kindLink {
		e = h.t[int(e>>16)+int(bits>>h.primary&(1<<(e&lenMask)-1))]
	}
	return e
}

func reverseBits(v uint32, n uint) uint32 {
	var r uint32
	for i := uint(0); i < n; i++ {
		r = r<<1 | v&1
		v >>= 1
	}
	return r
}

// build makes the table for code lengths lens. Over-subscribed codes are an
// error; bit patterns an incomplete code leaves unused decode as kindBad.
func (h *huffTable) build(lens []uint8, primary uint) error {
	var count [16]int
	maxLen := uint(0)
	for _, l := range lens {
		if l > 15 {
			return fmt.Errorf("code length %d", l)
		}
		count[l]++
		if uint(l) > maxLen {
			maxLen = uint(l)
		}
	}
	left := 1
	for l := 1; l <= 15; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return errors.New("over-subscribed code")
		}
	}
	var next [16]uint32
	code := uint32(0)
	count[0] = 0
	for l := 1; l <= 15; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}
	h.primary = primary
	size := 1 << primary
	if cap(h.t) < size {
		h.t = make([]uint32, size, size*2)
	}
	h.t = h.t[:size]
	for i := range h.t {
		h.t[i] = kindBad
	}
	sub := uint(0)
	if maxLen > primary {
		sub = maxLen - primary
	}
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		n := uint(l)
		rev := reverseBits(next[l], n)
		next[l]++
		entry := uint32(sym)<<16 | uint32(n)
		if n <= primary {
			for i := rev; i < uint32(size); i += 1 << n {
				h.t[i] = entry
			}
			continue
		}
		p := rev & uint32(size-1)
		if h.t[p]&kindMask != kindLink {
			start := len(h.t)
			for i := 0; i < 1<<sub; i++ {
				h.t = append(h.t, kindBad)
			}
			h.t[p] = uint32(start)<<16 | kindLink | uint32(sub)
		}
		start := h.t[p] >> 16
		for i := rev >> primary; i < 1<<sub; i += 1 << (n - primary) {
			h.t[start+i] = entry
		}
	}
	return nil
}

var fixedLit, fixedDist huffTable

func init() {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	if err := fixedLit.build(l[:], litBits); err != nil {
		panic(err)
	}
	var d [30]uint8
	for i := range d {
		d[i] = 5
	}
	if err := fixedDist.build(d[:], distBits); err != nil {
		panic(err)
	}
}

// readerFunc adapts a read method (such as an inflater's) to io.Reader.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
