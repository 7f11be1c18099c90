import Foundation
import Testing

@testable import CladePack

/// The working set's annotation: compact, round-tripped exactly, and bounded against a hostile pack.
struct WorkingSetTests {
    @Test func rangesRoundTrip() throws {
        let set = WorkingSet(chunkSize: 524_288, chunks: [9, 0, 1, 2, 3, 12, 13, 40, 2])
        #expect(set.encoded == "0-3,9,12-13,40")
        let parsed = try WorkingSet(encoded: set.encoded, chunkSize: 524_288, chunkLimit: 512, what: "test")
        #expect(parsed.chunks == [0, 1, 2, 3, 9, 12, 13, 40])
        #expect(try WorkingSet(encoded: "", chunkSize: 524_288, chunkLimit: 512, what: "test").chunks.isEmpty)
    }

    @Test(arguments: ["5-2", "1,,2", "-1", "a", "0-512", "1-2-3", "0-99999999999"])
    func hostileAnnotationsAreRefused(_ text: String) {
        #expect(throws: PackError.self) { try WorkingSet(encoded: text, chunkSize: 524_288, chunkLimit: 512, what: "test") }
    }

    @Test func aPlanRefusesWorkingSetOffsetsOutsideItsChunks() throws {
        let chunk = LazyFilePlan.Chunk(offset: 0, digest: "sha256:" + String(repeating: "a", count: 64), size: 100, contentSize: 524_288)
        var plan = LazyFilePlan(reference: "r/x:y", insecure: true, snapshotID: "s", logicalSize: 1 << 20, chunkSize: 524_288, chunks: [chunk], workingSet: [0])
        try plan.validate(what: "plan")
        plan.workingSet = [524_288]
        #expect(throws: PackError.self) { try plan.validate(what: "plan") }
    }
}
