package watch

// SetListPageSize pages the informers' lists by n objects until the returned restore is
// called, so tests can stream a few objects over several pages.
func SetListPageSize(n int64) (restore func()) {
	old := listPageSize
	listPageSize = n
	return func() { listPageSize = old }
}
