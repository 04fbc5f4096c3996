// Package auth authenticates Berth's API calls with AWS Signature Version 4,
// the scheme the AWS SDKs use, against access keys Berth issues, and says
// what each key may do.
package auth

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Roles of a key.
const (
	// RoleAdmin may call everything.
	RoleAdmin = "admin"
	// RoleInvoke may only invoke runtimes and stop their sessions.
	RoleInvoke = "invoke"
)

// Key is an access key pair and what it may do.
type Key struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
	Role   string `json:"role"`
	// Runtimes, if not empty, limits an invoke key to these runtime IDs.
	Runtimes []string `json:"runtimes,omitempty"`
	// ActForUsers lets the key name a runtimeUserId (AgentCore's
	// InvokeAgentRuntimeForUser permission).
	ActForUsers bool      `json:"actForUsers,omitempty"`
	Created     time.Time `json:"created"`
	Revoked     bool      `json:"revoked,omitempty"`
}

// ErrNoKey reports an unknown or revoked key.
var ErrNoKey = errors.New("no such key")

// Keys is the key file: JSON, mode 0600, rewritten whole by rename. Changes
// made by another process (berth keys) are picked up on the next lookup.
type Keys struct {
	path string

	mu    sync.Mutex
	keys  map[string]Key
	mtime time.Time
}

// OpenKeys opens the key file at path, creating an empty one if needed.
func OpenKeys(path string) (*Keys, error) {
	k := &Keys{path: path, keys: map[string]Key{}}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := k.save(); err != nil {
			return nil, err
		}
	}
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// reload reads the file if it changed since it was last read. k.mu must be
// held or k not yet shared.
func (k *Keys) reload() error {
	fi, err := os.Stat(k.path)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	if fi.ModTime().Equal(k.mtime) {
		return nil
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("read keys: %s is readable by others (mode %v); chmod 600 it", k.path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	var list []Key
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("read keys %s: %w", k.path, err)
	}
	k.keys = map[string]Key{}
	for _, key := range list {
		k.keys[key.ID] = key
	}
	k.mtime = fi.ModTime()
	return nil
}

func (k *Keys) save() error {
	list := make([]Key, 0, len(k.keys))
	for _, key := range k.keys {
		list = append(list, key)
	}
	slices.SortFunc(list, func(a, b Key) int { return a.Created.Compare(b.Created) })
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".keys-*")
	if err != nil {
		return fmt.Errorf("write keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write keys: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write keys: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write keys: %w", err)
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil { // CreateTemp made it 0600
		return fmt.Errorf("write keys: %w", err)
	}
	return nil
}

// Lookup returns the live key with that ID.
func (k *Keys) Lookup(id string) (Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.reload(); err != nil {
		return Key{}, err
	}
	key, ok := k.keys[id]
	if !ok || key.Revoked {
		return Key{}, ErrNoKey
	}
	return key, nil
}

// Create issues a new key.
func (k *Keys) Create(role string, runtimes []string, actForUsers bool) (Key, error) {
	if role != RoleAdmin && role != RoleInvoke {
		return Key{}, fmt.Errorf("role %q: want %s or %s", role, RoleAdmin, RoleInvoke)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.reload(); err != nil {
		return Key{}, err
	}
	// AWS access key IDs are 20 upper-case letters and digits; the secret
	// 40 characters.
	key := Key{ID: "BK" + rand.Text()[:18], Secret: rand.Text() + rand.Text()[:14], Role: role,
		Runtimes: runtimes, ActForUsers: actForUsers, Created: time.Now().UTC()}
	k.keys[key.ID] = key
	if err := k.save(); err != nil {
		return Key{}, err
	}
	return key, nil
}

// Revoke makes a key unusable.
func (k *Keys) Revoke(id string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.reload(); err != nil {
		return err
	}
	key, ok := k.keys[id]
	if !ok {
		return fmt.Errorf("revoke %s: %w", id, ErrNoKey)
	}
	key.Revoked = true
	k.keys[id] = key
	return k.save()
}

// List returns every key, revoked ones too, oldest first.
func (k *Keys) List() ([]Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.reload(); err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(k.keys))
	for _, key := range k.keys {
		out = append(out, key)
	}
	slices.SortFunc(out, func(a, b Key) int { return a.Created.Compare(b.Created) })
	return out, nil
}
