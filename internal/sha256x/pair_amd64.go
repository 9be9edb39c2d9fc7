//go:build amd64 && !purego

package sha256x

import "golang.org/x/sys/cpu"

//go:generate sh -c "go run ./_gen > pair_amd64.s"

// blockPair runs the 64-byte blocks of p through the compression function
// under state a and, independently, under state b.
//
//go:noescape
func blockPair(a, b *[8]uint32, p []byte)

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// pairAccelerated: the SHA extensions (CPUID leaf 7, EBX bit 29), and the
// SSSE3 and SSE4.1 shuffles and blends the kernel uses around them.
var pairAccelerated = func() bool {
	if max, _, _, _ := cpuid(0, 0); max < 7 {
		return false
	}
	_, ebx, _, _ := cpuid(7, 0)
	return ebx&(1<<29) != 0 && cpu.X86.HasSSSE3 && cpu.X86.HasSSE41
}()
