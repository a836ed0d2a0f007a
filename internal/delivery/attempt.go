package delivery

import (
	"context"
	"sync"
	"time"
)

// attemptClock bounds the attempts of one lane's worker, one at a time: a context for the
// worker's life, ended when the pipeline stops or an attempt outlives its timeout, and one
// timer. A context with a deadline of its own per attempt cost every delivery a timer, a
// registration with the pipeline's context and 640 bytes; re-arming one timer per attempt
// still cost two timer updates. The timer is armed when an attempt begins and none is
// pending; when it fires before the running attempt's deadline, it is armed for the rest.
type attemptClock struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	armed  bool
	// deadline is the running attempt's; zero between attempts.
	deadline time.Time
	// now reads the time; tests set it.
	now func() time.Time
}

// begin starts an attempt that may run until timeout, and returns its context.
func (c *attemptClock) begin(parent context.Context, timeout time.Duration) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now == nil {
		c.now = time.Now
	}
	if c.ctx == nil || c.ctx.Err() != nil {
		// The first attempt, or the one before ran out of time.
		c.ctx, c.cancel = context.WithCancelCause(parent)
	}
	c.deadline = c.now().Add(timeout)
	switch {
	case c.timer == nil:
		c.timer, c.armed = time.AfterFunc(timeout, c.expire), true
	case !c.armed:
		c.timer.Reset(timeout)
		c.armed = true
	}
	return attemptContext{Context: c.ctx, deadline: c.deadline}
}

// end ends the running attempt.
func (c *attemptClock) end() {
	c.mu.Lock()
	c.deadline = time.Time{}
	c.mu.Unlock()
}

// expire ends the running attempt's context if its time is up, and otherwise waits for
// the rest of it; between attempts it lets the timer rest.
func (c *attemptClock) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	if c.deadline.IsZero() || c.timer == nil {
		return
	}
	if left := c.deadline.Sub(c.now()); left > 0 {
		c.timer.Reset(left)
		c.armed = true
		return
	}
	c.cancel(context.DeadlineExceeded)
}

// stop lets the clock go when its worker ends.
func (c *attemptClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.cancel != nil {
		c.cancel(context.Canceled)
	}
	c.ctx, c.cancel, c.timer, c.armed = nil, nil, nil, false
}

// attemptContext is an attempt's context: its worker's, with the attempt's deadline.
type attemptContext struct {
	context.Context
	deadline time.Time
}

func (c attemptContext) Deadline() (time.Time, bool) { return c.deadline, true }

// Err tells a timed-out attempt, as a context with that deadline would.
func (c attemptContext) Err() error {
	err := c.Context.Err()
	if err != nil && context.Cause(c.Context) == context.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return err
}
