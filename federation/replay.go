package federation

import (
	"container/heap"
	"sync"
	"time"
)

// replayCache remembers assertion IDs until the assertion could no longer
// be accepted anyway. It is bounded: when full of unexpired IDs it refuses
// new logins rather than forgetting an ID that could then be replayed.
type replayCache struct {
	mu      sync.Mutex
	max     int
	expires map[string]time.Time
	order   expiryHeap
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, expires: make(map[string]time.Time)}
}

// remember records id as used until expiry. It returns ErrReplay when id is
// already recorded and unexpired, ErrReplayCacheFull when no room is left.
func (c *replayCache) remember(id string, expiry, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purge(now)
	if _, seen := c.expires[id]; seen {
		return ErrReplay
	}
	if len(c.expires) >= c.max {
		return ErrReplayCacheFull
	}
	c.expires[id] = expiry
	heap.Push(&c.order, expiryEntry{id: id, at: expiry})
	return nil
}

func (c *replayCache) purge(now time.Time) {
	for len(c.order) > 0 && !c.order[0].at.After(now) {
		e := heap.Pop(&c.order).(expiryEntry)
		delete(c.expires, e.id)
	}
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.expires)
}

type expiryEntry struct {
	id string
	at time.Time
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
