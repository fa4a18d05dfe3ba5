//go:build tools

// Package etcd records the program that scripts/build-kubernetes.sh builds
// (go.etcd.io/etcd/server/v3 is etcd's main package), so that `go mod tidy`
// keeps what it needs in go.mod and go.sum.
package etcd

import _ "go.etcd.io/etcd/server/v3"
