//go:build tools

// Package kubernetes records the Kubernetes programs that
// scripts/build-kubernetes.sh builds, so that `go mod tidy` keeps every module
// they need in go.mod and go.sum. The build tag keeps this file out of any
// build: the imports are programs (package main), not libraries.
package kubernetes

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
