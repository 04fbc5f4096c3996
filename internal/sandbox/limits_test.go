package sandbox

import "testing"

func TestLimitsOr(t *testing.T) {
	def := Limits{MemoryBytes: 2 << 30, MilliCPUs: 2000, Pids: 512, TmpBytes: 256 << 20}
	for _, tt := range []struct {
		name     string
		in, want Limits
	}{
		{"all zero", Limits{}, def},
		{"all set", Limits{MemoryBytes: 1, MilliCPUs: 2, Pids: 3, TmpBytes: 4}, Limits{MemoryBytes: 1, MilliCPUs: 2, Pids: 3, TmpBytes: 4}},
		{"memory only", Limits{MemoryBytes: 64 << 20}, Limits{MemoryBytes: 64 << 20, MilliCPUs: 2000, Pids: 512, TmpBytes: 256 << 20}},
	} {
		if got := tt.in.Or(def); got != tt.want {
			t.Errorf("%s: Or = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
