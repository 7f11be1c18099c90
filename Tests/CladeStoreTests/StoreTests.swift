import Foundation
import Testing

@testable import CladeStore

@Suite(.serialized) struct StoreTests {
    func temporaryHome() -> CladeHome {
        CladeHome(root: FileManager.default.temporaryDirectory.appendingPathComponent("clade-store-\(UUID().uuidString)"))
    }

    @Test func digestsParseOnlyCanonicalForm() throws {
        let hex = String(repeating: "ab", count: 32)
        #expect(try Digest(parsing: "sha256:\(hex)").hex == hex)
        #expect(throws: StoreError.self) { try Digest(parsing: hex) }
        #expect(throws: StoreError.self) { try Digest(parsing: "sha256:\(hex.uppercased())") }
        #expect(throws: StoreError.self) { try Digest(parsing: "sha256:../../etc/passwd") }
        #expect(Digest.of(Data("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func ingestStoresByDigestSealsAndDeduplicates() throws {
        let home = temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        let store = BlobStore(home: home)
        let staging = try home.makeTemporaryDirectory(prefix: "t")
        let file = staging.appendingPathComponent("x")
        try Data("hello".utf8).write(to: file)
        let (digest, size) = try store.ingest(file)
        #expect(size == 5)
        #expect(digest == Digest.of(Data("hello".utf8)))
        #expect(try FileSystem.status(of: store.url(for: digest))?.mode ?? 0 & 0o777 == 0o100444)
        #expect(try !FileSystem.exists(file))
        try Data("hello".utf8).write(to: file)
        #expect(try store.ingest(file).digest == digest)
        #expect(try !FileSystem.exists(file))
        try store.verify(digest)
    }

    @Test func verifyDetectsChangedBytes() throws {
        let home = temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        let store = BlobStore(home: home)
        let staging = try home.makeTemporaryDirectory(prefix: "t")
        try Data("good".utf8).write(to: staging.appendingPathComponent("x"))
        let digest = try store.ingest(staging.appendingPathComponent("x")).digest
        let path = store.url(for: digest)
        chmod(path.path, 0o644)
        try Data("evil".utf8).write(to: path)
        #expect(throws: StoreError.self) { try store.verify(digest) }
    }

    @Test func statErrorsOtherThanAbsencePropagate() throws {
        defer { FileSystem.injectedStatError = nil }
        let target = URL(fileURLWithPath: "/tmp/clade-injected")
        for code in [EACCES, EIO] {
            FileSystem.injectedStatError = { $0 == target.path ? code : nil }
            #expect(throws: StoreError.self) { try FileSystem.exists(target) }
        }
        FileSystem.injectedStatError = { $0 == target.path ? ENOENT : nil }
        #expect(try FileSystem.exists(target) == false)
    }

    @Test func atomicWriteLeavesNoTemporaryFiles() throws {
        let home = temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let target = home.state.appendingPathComponent("a.json")
        try FileSystem.writeAtomically(Data("1".utf8), to: target)
        try FileSystem.writeAtomically(Data("2".utf8), to: target)
        #expect(try Data(contentsOf: target) == Data("2".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: home.state.path) == ["a.json"])
    }

    @Test func homeResolutionOrder() {
        #expect(CladeHome.resolve(explicit: "/x/y", environment: ["CLADE_HOME": "/z"]).root.path == "/x/y")
        #expect(CladeHome.resolve(explicit: nil, environment: ["CLADE_HOME": "/z"]).root.path == "/z")
        let fallback = CladeHome.resolve(explicit: nil, environment: ["HOME": "/home/u"]).root.path
        #expect(fallback == (getuid() == 0 ? "/var/lib/clade" : "/home/u/.local/share/clade"))
    }
}
