// Package hcljson reads JSON into the syntax tree the HCL v1 parser
// produces for the same document, one ObjectItem per key, with a position
// on every node, so that one decoder serves a config (or a policy) in
// either syntax and reports every problem at its file:line:col.
//
// HCL's own JSON parser is not used: it drops token positions, flattens
// nested objects and lists of objects (losing where an element ends) and
// silently accepts malformed input such as a missing comma.
//
// It is a leaf: the agent's config decoder (mesh/config) and the ACL rule
// parser (acl), which may import nothing of vmesh's, both use it.
package hcljson
