//go:build goexperiment.simd && amd64

package sha256x

import (
	"crypto/sha256"
	"encoding/binary"
	"simd/archsimd"
)

// sum16 hashes up to sixteen messages in the lanes of AVX-512 registers,
// or is nil on a CPU without AVX-512.
var sum16 = func() func([][]byte, [][sha256.Size]byte) {
	if archsimd.X86.AVX512() {
		return sum16AVX512
	}
	return nil
}()

var roundConstants = [64]uint32{
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

// sum16AVX512 hashes len(msgs) ≤ 16 messages, message k in lane k. Each
// lane runs through its own 64-byte blocks, then the one or two padding
// blocks; a lane whose message has ended keeps its state while the others
// go on.
func sum16AVX512(msgs [][]byte, sums [][sha256.Size]byte) {
	var (
		full   [lanes]int          // whole 64-byte blocks of the message
		blocks [lanes]int          // with the padding blocks
		tails  [lanes][2 * 64]byte // the message's last bytes, padded
		words  [16][lanes]uint32   // one block of every lane, word by word
		live   [lanes]uint32       // 1 for a lane still hashing
		last   int
	)
	for k, m := range msgs {
		full[k] = len(m) / 64
		n := copy(tails[k][:], m[full[k]*64:])
		tails[k][n] = 0x80
		pad := 1
		if n >= 64-8 {
			pad = 2
		}
		binary.BigEndian.PutUint64(tails[k][pad*64-8:], uint64(len(m))*8)
		blocks[k] = full[k] + pad
		last = max(last, blocks[k])
	}
	var state [8]archsimd.Uint32x16
	for i := range state {
		state[i] = archsimd.BroadcastUint32x16(initialState[i])
	}
	one := archsimd.BroadcastUint32x16(1)
	for j := 0; j < last; j++ {
		for k := range msgs {
			var b []byte
			switch {
			case j < full[k]:
				b = msgs[k][j*64:]
			case j < blocks[k]:
				b = tails[k][(j-full[k])*64:]
			default:
				live[k] = 0
				continue
			}
			live[k] = 1
			b = b[:64:64]
			for t := range 16 {
				words[t][k] = binary.BigEndian.Uint32(b[4*t:])
			}
		}
		state = compress(state, &words, archsimd.LoadUint32x16(&live).Equal(one))
	}
	var out [8][lanes]uint32
	for i := range state {
		state[i].Store(&out[i])
	}
	for k := range msgs {
		for i := range out {
			binary.BigEndian.PutUint32(sums[k][4*i:], out[i][k])
		}
	}
}

// compress runs the SHA-256 compression function in sixteen lanes on one
// block of each; lanes not live keep their state.
func compress(state [8]archsimd.Uint32x16, words *[16][lanes]uint32, live archsimd.Mask32x16) [8]archsimd.Uint32x16 {
	var w [16]archsimd.Uint32x16
	for t := range w {
		w[t] = archsimd.LoadUint32x16(&words[t])
	}
	a, b, c, d, e, f, g, h := state[0], state[1], state[2], state[3], state[4], state[5], state[6], state[7]
	for t := range 64 {
		wt := w[t&15]
		if t >= 16 {
			w15, w2 := w[(t-15)&15], w[(t-2)&15]
			s0 := w15.RotateAllRight(7).Xor(w15.RotateAllRight(18)).Xor(w15.ShiftAllRight(3))
			s1 := w2.RotateAllRight(17).Xor(w2.RotateAllRight(19)).Xor(w2.ShiftAllRight(10))
			wt = wt.Add(s0).Add(w[(t-7)&15]).Add(s1)
			w[t&15] = wt
		}
		s1 := e.RotateAllRight(6).Xor(e.RotateAllRight(11)).Xor(e.RotateAllRight(25))
		ch := g.Xor(e.And(f.Xor(g)))
		t1 := h.Add(s1).Add(ch).Add(archsimd.BroadcastUint32x16(roundConstants[t])).Add(wt)
		s0 := a.RotateAllRight(2).Xor(a.RotateAllRight(13)).Xor(a.RotateAllRight(22))
		maj := a.And(b).Or(c.And(a.Or(b)))
		h, g, f, e, d, c, b, a = g, f, e, d.Add(t1), c, b, a, t1.Add(s0.Add(maj))
	}
	next := [8]archsimd.Uint32x16{a, b, c, d, e, f, g, h}
	for i := range next {
		next[i] = state[i].Add(next[i]).Merge(state[i], live)
	}
	return next
}
