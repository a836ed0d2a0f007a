// Package checkpoint keeps the watch registry's checkpoints in a ConfigMap the operator owns,
// so a restarted or newly elected operator resumes every subscriber where it stopped.
package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

const (
	// DefaultName is the ConfigMap's name.
	DefaultName = "dynamic-notifier-checkpoints"
	// dataKey holds the JSON document.
	dataKey = "checkpoints.json"
	// formatVersion changes when the document's shape does.
	formatVersion = 1
)

// document is what the ConfigMap holds: one point per subscription.
type document struct {
	Version       int                    `json:"version"`
	Subscriptions map[string]watch.Point `json:"subscriptions"`
}

// ConfigMap stores checkpoints in one ConfigMap. Reads go to the API server, not a cache,
// so the operator needs no ConfigMap informer.
type ConfigMap struct {
	Reader    client.Reader
	Writer    client.Writer
	Namespace string
	Name      string
}

func (c *ConfigMap) key() types.NamespacedName {
	name := c.Name
	if name == "" {
		name = DefaultName
	}
	return types.NamespacedName{Namespace: c.Namespace, Name: name}
}

// Load returns the stored checkpoints; none when the ConfigMap does not exist. A document
// of another format version is ignored rather than misread.
func (c *ConfigMap) Load(ctx context.Context) (map[string]watch.Point, error) {
	var cm corev1.ConfigMap
	if err := c.Reader.Get(ctx, c.key(), &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return map[string]watch.Point{}, nil
		}
		return nil, err
	}
	var doc document
	if err := json.Unmarshal([]byte(cm.Data[dataKey]), &doc); err != nil || doc.Version != formatVersion {
		return map[string]watch.Point{}, nil //nolint:nilerr // unreadable checkpoints mean starting fresh
	}
	if doc.Subscriptions == nil {
		doc.Subscriptions = map[string]watch.Point{}
	}
	return doc.Subscriptions, nil
}

// Save replaces the stored checkpoints, creating the ConfigMap on first use.
func (c *ConfigMap) Save(ctx context.Context, points map[string]watch.Point) error {
	data, err := json.Marshal(document{Version: formatVersion, Subscriptions: points})
	if err != nil {
		return err
	}
	key := c.key()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{
			"app.kubernetes.io/name":       "dynamic-notifier",
			"app.kubernetes.io/component":  "checkpoints",
			"app.kubernetes.io/managed-by": "dynamic-notifier",
		}},
		Data: map[string]string{dataKey: string(data)},
	}
	// Only the leader writes, so last-writer-wins needs no resourceVersion precondition.
	err = c.Writer.Update(ctx, cm)
	if apierrors.IsNotFound(err) {
		err = c.Writer.Create(ctx, cm)
	}
	if err != nil {
		return fmt.Errorf("save checkpoints to ConfigMap %s: %w", key, err)
	}
	return nil
}
