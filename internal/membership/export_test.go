package membership

import "context"

// Renew is one renewal, as Start's loop makes them: for tests of what a renewal racing
// Leave does.
func (m *Membership) Renew(ctx context.Context) error { return m.renew(ctx) }
