package checkpoint

import "testing"

func TestShardCountIsTheLeastPowerOfTwoThatHoldsThePoints(t *testing.T) {
	cases := []struct{ points, want int }{
		{0, 1}, {1, 1}, {pointsPerShard, 1}, {pointsPerShard + 1, 2}, {3 * pointsPerShard, 4},
		{20000, 16}, {DefaultShards * pointsPerShard, DefaultShards}, {1 << 30, DefaultShards},
	}
	for _, tc := range cases {
		if got := shardCount(tc.points); got != tc.want {
			t.Errorf("shardCount(%d) = %d, want %d", tc.points, got, tc.want)
		}
	}
}
