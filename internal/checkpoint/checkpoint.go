// Package checkpoint keeps the watch registry's checkpoints across restarts: a store in
// ConfigMaps the operator owns, and a Keeper that restores them at start, saves them while
// the operator runs and a last time, after draining, when it stops. A restarted or newly
// elected operator resumes every subscriber where it stopped.
package checkpoint

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

const (
	// DefaultName is the prefix of the ConfigMaps' names: <name>-00 ... <name>-31. A
	// ConfigMap of exactly this name is the single document of format version 1, read once
	// and removed after the first save.
	DefaultName = "dynamic-notifier-checkpoints"
	// DefaultShards spreads checkpoints over at most this many ConfigMaps, so their 1 MiB
	// limit is far away: about 6,000 points fit in each (a point is about 170 bytes).
	DefaultShards = 32
	// pointsPerShard sizes the shards of a single writer: as few ConfigMaps as hold the
	// points at about 250 KB each, so a save of a small installation is one write, not 32.
	pointsPerShard = 1500
	// dataKey holds the JSON document.
	dataKey = "checkpoints.json"
	// formatVersion changes when the document's shape does.
	formatVersion = 2
	legacyVersion = 1
)

// labels mark the ConfigMaps as the operator's checkpoints; Load finds them by these.
var labels = map[string]string{
	"app.kubernetes.io/name":       "dynamic-notifier",
	"app.kubernetes.io/component":  "checkpoints",
	"app.kubernetes.io/managed-by": "dynamic-notifier",
}

// Store keeps checkpoints across restarts.
type Store interface {
	Load(ctx context.Context) (map[watch.PointKey]watch.Point, error)
	Save(ctx context.Context, points map[watch.PointKey]watch.Point) error
}

// document is what one ConfigMap holds: the points of the subscribers hashed to it.
type document struct {
	Version int      `json:"version"`
	Points  []stored `json:"points"`
}

type stored struct {
	watch.PointKey
	ResourceVersion string    `json:"resourceVersion"`
	Time            time.Time `json:"time"`
}

// legacyDocument is format version 1: one point per subscription, keyed by its name.
type legacyDocument struct {
	Version       int                    `json:"version"`
	Subscriptions map[string]watch.Point `json:"subscriptions"`
}

// ConfigMaps stores checkpoints in ConfigMaps of one namespace, a subscriber's points
// together in one, as few ConfigMaps as hold them, and writes only those whose content
// changed. Reads go to the API server,
// not a cache, so the operator needs no ConfigMap informer. Only the leader writes, so
// last-writer-wins needs no resourceVersion precondition.
type ConfigMaps struct {
	Client    client.Client
	Namespace string
	// Name prefixes the ConfigMaps' names; DefaultName when empty.
	Name string
	// Shards fixes how many ConfigMaps to spread over. Zero: DefaultShards when Owns is
	// set (replicas must agree on where a point goes), else as few as the points need,
	// a power of two up to DefaultShards (shardCount).
	Shards int
	// Owns, when set, says which points this replica writes (scale-out: the streams it
	// serves). Save then merges: a ConfigMap keeps the points of the others as stored,
	// written back with its resourceVersion as a precondition, so replicas sharing a
	// ConfigMap never undo each other's writes. Nil: the only writer, as with one leader.
	Owns func(watch.PointKey) bool

	mu sync.Mutex
	// written is each shard's content as last stored: unchanged shards are not written.
	written map[string]string
	// legacy is true while a version 1 document may still exist.
	legacy bool
	// shards is the count a single writer saves with; it only grows while the writer runs,
	// so points do not move back and forth around a boundary.
	shards int
	// layout is the count of the last save whose every write went through (0: unknown, as
	// after Load); only a save with another count can move points.
	layout int
}

func (c *ConfigMaps) prefix() string { return cmp.Or(c.Name, DefaultName) }

// shardCount is how many ConfigMaps a single writer spreads points over: the least power
// of two that holds them at pointsPerShard each, at least 1 and at most DefaultShards.
func shardCount(points int) int {
	n := 1
	for n < DefaultShards && n*pointsPerShard < points {
		n *= 2
	}
	return n
}

func (c *ConfigMaps) shardName(subscriber string, shards int) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(subscriber))
	return fmt.Sprintf("%s-%02d", c.prefix(), h.Sum32()%uint32(shards))
}

// Load returns the stored checkpoints; none when there are no ConfigMaps. A document of an
// unknown format version is ignored rather than misread.
func (c *ConfigMaps) Load(ctx context.Context) (map[watch.PointKey]watch.Point, error) {
	var list corev1.ConfigMapList
	if err := c.Client.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingLabels(labels)); err != nil {
		return nil, err
	}
	out := map[watch.PointKey]watch.Point{}
	written := map[string]string{}
	legacy := false
	for _, cm := range list.Items {
		data := cm.Data[dataKey]
		if cm.Name == c.prefix() {
			legacy = true
			readLegacy(data, out)
			continue
		}
		if !strings.HasPrefix(cm.Name, c.prefix()+"-") {
			continue
		}
		written[cm.Name] = data
		var doc document
		if err := json.Unmarshal([]byte(data), &doc); err != nil || doc.Version != formatVersion {
			continue // unreadable: those subscribers start fresh
		}
		for _, p := range doc.Points {
			point := watch.Point{Stream: p.Stream, ResourceVersion: p.ResourceVersion, Time: p.Time.UTC()}
			// A point found in two shards (a save cut short while it moved): resume from
			// the earlier, which sends some changes again; the later could skip some.
			if prev, twice := out[p.PointKey]; !twice || point.Before(prev) {
				out[p.PointKey] = point
			}
		}
	}
	c.mu.Lock()
	if c.Owns == nil {
		c.written, c.legacy = written, legacy
	}
	c.mu.Unlock()
	return out, nil
}

func readLegacy(data string, out map[watch.PointKey]watch.Point) {
	var doc legacyDocument
	if err := json.Unmarshal([]byte(data), &doc); err != nil || doc.Version != legacyVersion {
		return
	}
	for name, p := range doc.Subscriptions {
		p.Time = p.Time.UTC()
		out[watch.PointKey{Subscriber: name, Stream: p.Stream}] = p
	}
}

// Save stores points: every ConfigMap whose share of them changed is written, one that has
// none left is emptied. With Owns (several replicas share the ConfigMaps), only this
// replica's points are replaced and the others' kept as stored. It goes on past a failed
// write and returns every failure.
func (c *ConfigMaps) Save(ctx context.Context, points map[watch.PointKey]watch.Point) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	count := c.Shards
	if count == 0 && c.Owns != nil {
		count = DefaultShards
	} else if count == 0 {
		c.shards = max(c.shards, shardCount(len(points)))
		count = c.shards
	}
	shards := c.byShard(points, count)
	if c.written == nil {
		c.written = map[string]string{}
	}
	for name := range c.written {
		if _, ok := shards[name]; !ok {
			shards[name] = nil
		}
	}
	var errs []error
	// Points that move to another shard (the count changed) are written there before their
	// old shard is rewritten without them: a save cut short leaves a point twice (Load
	// keeps the older), never nowhere. Counts are powers of two, so a shard that gives
	// points away takes none in.
	var givers map[string]bool
	if count != c.layout {
		givers = c.movedOut(points, count)
	}
	var takers, giving []string
	for _, name := range slices.Sorted(maps.Keys(shards)) {
		if givers[name] {
			giving = append(giving, name)
		} else {
			takers = append(takers, name)
		}
	}
	for _, name := range append(takers, giving...) {
		if givers[name] && len(errs) > 0 {
			break // a point's new shard may not have it: keep the old one as it is
		}
		data, err := encode(shards[name])
		if err != nil {
			return err
		}
		prev, known := c.written[name]
		if known && prev == data {
			continue
		}
		if c.Owns != nil {
			err = c.merge(ctx, name, shards[name])
		} else {
			err = c.write(ctx, name, data, known)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.written[name] = data
	}
	if len(errs) == 0 {
		c.layout = count
	}
	if len(errs) == 0 && c.legacy && c.Owns == nil {
		err := c.Client.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.prefix()}})
		if err == nil || apierrors.IsNotFound(err) {
			c.legacy = false
		}
	}
	return errors.Join(errs...)
}

// movedOut names the shards, as last written, that hold points now placed elsewhere.
func (c *ConfigMaps) movedOut(points map[watch.PointKey]watch.Point, count int) map[string]bool {
	out := map[string]bool{}
	for name, data := range c.written {
		var doc document
		if json.Unmarshal([]byte(data), &doc) != nil {
			continue
		}
		for _, p := range doc.Points {
			if _, kept := points[p.PointKey]; kept && c.shardName(p.Subscriber, count) != name {
				out[name] = true
				break
			}
		}
	}
	return out
}

func (c *ConfigMaps) byShard(points map[watch.PointKey]watch.Point, count int) map[string][]stored {
	shards := map[string][]stored{}
	for k, p := range points {
		name := c.shardName(k.Subscriber, count)
		shards[name] = append(shards[name], stored{PointKey: k, ResourceVersion: p.ResourceVersion,
			Time: p.Time.UTC().Round(0)})
	}
	return shards
}

// mergeAttempts bounds the retries of one ConfigMap's merge when other replicas write it
// at the same time.
const mergeAttempts = 5

// merge replaces the owned points of one ConfigMap by mine, retrying on conflicts.
func (c *ConfigMaps) merge(ctx context.Context, name string, mine []stored) error {
	var err error
	for range mergeAttempts {
		cm := &corev1.ConfigMap{}
		err = c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, cm)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			break
		}
		points := slices.Clone(mine)
		var doc document
		if exists && json.Unmarshal([]byte(cm.Data[dataKey]), &doc) == nil && doc.Version == formatVersion {
			for _, p := range doc.Points {
				if !c.Owns(p.PointKey) {
					points = append(points, p)
				}
			}
		}
		data, encErr := encode(points)
		if encErr != nil {
			return encErr
		}
		switch {
		case exists && cm.Data[dataKey] == data:
			return nil
		case exists:
			cm.Labels = labels
			cm.Data = map[string]string{dataKey: data}
			err = c.Client.Update(ctx, cm) // with the resourceVersion read: a conflict retries
		default:
			err = c.Client.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: name, Labels: labels},
				Data:       map[string]string{dataKey: data}})
		}
		if err == nil || (!apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err)) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("save checkpoints to ConfigMap %s/%s: %w", c.Namespace, name, err)
	}
	return nil
}

// encode writes a shard's points in a stable order, so equal content compares equal.
func encode(points []stored) (string, error) {
	slices.SortFunc(points, func(a, b stored) int {
		return cmp.Or(strings.Compare(a.Subscriber, b.Subscriber), strings.Compare(a.Stream, b.Stream))
	})
	if points == nil {
		points = []stored{}
	}
	data, err := json.Marshal(document{Version: formatVersion, Points: points})
	return string(data), err
}

func (c *ConfigMaps) write(ctx context.Context, name, data string, exists bool) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: name, Labels: labels},
		Data:       map[string]string{dataKey: data},
	}
	// Load saw which ConfigMaps exist: a new shard is created in one request, not after a
	// failed update. Either guess may be stale (someone deleted or created one since).
	var err error
	if exists {
		if err = c.Client.Update(ctx, cm); apierrors.IsNotFound(err) {
			err = c.Client.Create(ctx, cm)
		}
	} else if err = c.Client.Create(ctx, cm); apierrors.IsAlreadyExists(err) {
		err = c.Client.Update(ctx, cm)
	}
	if err != nil {
		return fmt.Errorf("save checkpoints to ConfigMap %s/%s: %w", c.Namespace, name, err)
	}
	return nil
}
