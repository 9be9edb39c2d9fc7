//go:build !(goexperiment.simd && amd64)

package sha256x

import "crypto/sha256"

// sum16 is nil: this build has no vector code.
var sum16 func(msgs [][]byte, sums [][sha256.Size]byte)
