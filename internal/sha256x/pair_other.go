//go:build !amd64 || purego

package sha256x

const pairAccelerated = false

func blockPair(a, b *[8]uint32, p []byte) { panic("sha256x: no SHA extensions") }
