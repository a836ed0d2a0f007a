// Package verifygenerated tests hack/verify-generated.sh, which fails CI on committed files
// that generation, go mod tidy or gofmt would change. It has no code of its own.
package verifygenerated
