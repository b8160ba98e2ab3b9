package sticky

import (
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/internal/fuzzsmoke"
)

func TestFuzzTargetsBriefly(t *testing.T) {
	fuzzsmoke.Run(t, 5*time.Second, "FuzzDecodeSnapshotFile")
}
