package delivery

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are a subscription's counters. They outlive pipelines: a spec change rebuilds the
// pipeline but keeps counting.
type Stats struct {
	observed, delivered, failed, dropped, deadLettered, evicted atomic.Int64

	mu               sync.Mutex
	lastEventTime    time.Time
	lastDeliveryTime time.Time
	lastDropTime     time.Time
	lastError        string
	failing          bool
	lastResyncTime   time.Time
	lastOverBudget   time.Time
	overBudget       int64
}

// NewStats starts counting from the values a status already reports (after a restart).
func NewStats(observed, delivered, failed, dropped int64) *Stats {
	s := &Stats{}
	s.observed.Store(observed)
	s.delivered.Store(delivered)
	s.failed.Store(failed)
	s.dropped.Store(dropped)
	return s
}

// Snapshot is a consistent copy of the counters for status.
type Snapshot struct {
	Observed, Delivered, Failed, Dropped, DeadLettered int64
	// Evicted counts the dropped events (in Dropped too) that went to keep the process's
	// memory budget, not for a full queue.
	Evicted                                       int64
	LastEventTime, LastDeliveryTime, LastDropTime time.Time
	// Failing is true while the last attempt failed and none has succeeded since.
	Failing   bool
	LastError string
	// LastResyncTime is when the subscription last had to be resynced.
	LastResyncTime time.Time
	// FilterOverBudget counts the changes whose filter evaluation exceeded its cost budget
	// (they were not delivered); LastOverBudget is when that last happened.
	FilterOverBudget int64
	LastOverBudget   time.Time
}

// OverBudgetRecently tells whether the filter exceeded its cost budget within the last
// minute, and how long until that stops being recent.
func (s Snapshot) OverBudgetRecently(now time.Time) (bool, time.Duration) {
	if s.LastOverBudget.IsZero() {
		return false, 0
	}
	left := droppedRecentlyWait - now.Sub(s.LastOverBudget)
	return left > 0, left
}

// DroppedRecently tells whether the queue overflowed within the last minute, and how
// long until that stops being recent.
func (s Snapshot) DroppedRecently(now time.Time) (bool, time.Duration) {
	if s.LastDropTime.IsZero() {
		return false, 0
	}
	left := droppedRecentlyWait - now.Sub(s.LastDropTime)
	return left > 0, left
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{
		Observed: s.observed.Load(), Delivered: s.delivered.Load(), Failed: s.failed.Load(),
		Dropped: s.dropped.Load(), DeadLettered: s.deadLettered.Load(), Evicted: s.evicted.Load(),
		LastEventTime: s.lastEventTime, LastDeliveryTime: s.lastDeliveryTime, LastDropTime: s.lastDropTime,
		Failing: s.failing, LastError: s.lastError, LastResyncTime: s.lastResyncTime,
		FilterOverBudget: s.overBudget, LastOverBudget: s.lastOverBudget,
	}
}

func (s *Stats) observe() {
	s.observed.Add(1)
	now := time.Now()
	s.mu.Lock()
	s.lastEventTime = now
	s.mu.Unlock()
}

// drop counts an event the full queue refused: a failed delivery too.
func (s *Stats) drop() {
	s.dropped.Add(1)
	s.failed.Add(1)
	now := time.Now()
	s.mu.Lock()
	s.lastDropTime = now
	s.mu.Unlock()
}

// FilterOverBudget records a change whose filter cost more than its budget.
func (s *Stats) FilterOverBudget() {
	s.mu.Lock()
	s.overBudget++
	s.lastOverBudget = time.Now()
	s.mu.Unlock()
}

// Resynced records that the subscription was resynced.
func (s *Stats) Resynced() {
	s.mu.Lock()
	s.lastResyncTime = time.Now()
	s.mu.Unlock()
}

func (s *Stats) fail()       { s.failed.Add(1) }
func (s *Stats) evict()      { s.evicted.Add(1) }
func (s *Stats) deadLetter() { s.deadLettered.Add(1) }

// attempted records one attempt, which delivered n events or failed with err, and tells
// whether the delivery health flipped.
func (s *Stats) attempted(n int, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.failing
	if err == nil {
		s.delivered.Add(int64(n))
		s.lastDeliveryTime = time.Now()
		s.failing, s.lastError = false, ""
	} else {
		s.failing, s.lastError = true, err.Error()
	}
	return was != s.failing
}
