//go:build race

package main

// raceBuild: the tests run under the race detector (memory figures mean
// nothing then).
const raceBuild = true
