package replay

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkUse is the common case: a new key, some earlier ones expiring.
func BenchmarkUse(b *testing.B) {
	c := New(0)
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "jti-" + strconv.Itoa(i) + "-0123456789abcdef"
	}
	now := t0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		now = now.Add(time.Microsecond)
		// Keys repeat every 65536 uses, 65 ms apart: their entries, which
		// live 60 ms, have expired by then.
		if err := c.Use(keys[i%len(keys)], now.Add(60*time.Millisecond), now); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUseParallel is BenchmarkUse from all CPUs: the contended path.
func BenchmarkUseParallel(b *testing.B) {
	c := New(0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var buf [32]byte
		p := strconv.AppendInt(buf[:0], time.Now().UnixNano(), 36)
		n := 0
		for pb.Next() {
			n++
			now := time.Now()
			key := string(strconv.AppendInt(append(p, '-'), int64(n), 10))
			if err := c.Use(key, now.Add(100*time.Millisecond), now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFull reports the memory a full cache takes per entry.
func BenchmarkFull(b *testing.B) {
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := New(DefaultCapacity)
		for i := range DefaultCapacity {
			c.Use(strconv.Itoa(i), t0.Add(time.Hour), t0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/DefaultCapacity, "B/entry")
		runtime.KeepAlive(c)
	}
}
