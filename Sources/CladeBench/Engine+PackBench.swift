import CladeEngine
import CladeModel
import CladePack
import CladeStore
import Foundation

/// The result of `clade bench pack`: clade's pack and unpack against `tar` + `zstd -3 -T0` of
/// the same files, measured in one run on one freshly baked snapshot.
public struct PackBenchReport: Codable, Sendable {
    public var memoryMiB: Int
    public var packSeconds: Double
    public var packBytes: Int64
    public var unpackSeconds: Double
    public var tarSeconds: Double
    public var tarBytes: Int64
    public var untarSeconds: Double
    /// Logical guest memory over its packed bytes.
    public var memoryCompression: Double
    /// Compressed bytes a sibling branch's pack adds to its parent's pack.
    public var branchNewBytes: Int64
    /// Named ratios with their targets in the README: memory compression ≥ 33, pack and unpack
    /// throughput ≥ 1.0 × tar+zstd, sibling branch new bytes ≤ 0.10 of the parent's pack.
    public var ratios: [String: Double]

    enum CodingKeys: String, CodingKey {
        case ratios
        case memoryMiB = "memory_mib"
        case packSeconds = "pack_s"
        case packBytes = "pack_bytes"
        case unpackSeconds = "unpack_s"
        case tarSeconds = "tar_zstd_s"
        case tarBytes = "tar_zstd_bytes"
        case untarSeconds = "untar_zstd_s"
        case memoryCompression = "memory_compression"
        case branchNewBytes = "branch_new_bytes"
    }
}

extension Engine {
    /// Bakes a snapshot, packs and unpacks it, does the same with tar+zstd, and packs a sibling
    /// branch into the parent's layout to count the bytes it adds.
    public func benchPack(memoryMiB: Int = 256, progress: @Sendable (String) -> Void = { _ in }) async throws -> PackBenchReport {
        let tag = "benchpk-\(Names.newSandboxID())"
        progress("baking \(tag)")
        _ = try await snapshots.bake(BakeOptions(boot: BootOptions(memoryMiB: memoryMiB), tag: tag))
        let scratch = try home.makeTemporaryDirectory(prefix: "benchpack")
        defer { try? FileSystem.remove(scratch) }
        do {
            let report = try await runPackBench(tag: tag, memoryMiB: memoryMiB, scratch: scratch, progress: progress)
            _ = try? await snapshots.remove(tag, cascade: true)
            return report
        } catch {
            _ = try? await snapshots.remove(tag, cascade: true)
            throw error
        }
    }

    private func runPackBench(tag: String, memoryMiB: Int, scratch: URL, progress: @Sendable (String) -> Void) async throws -> PackBenchReport {
        let metadata = try snapshotCatalog.require(tag)
        let layout = scratch.appendingPathComponent("layout")
        progress("clade pack")
        let packStart = Date()
        let packed = try Packer(home: home).pack(tag: tag, into: layout)
        let packSeconds = Date().timeIntervalSince(packStart)

        progress("tar + zstd -3 -T0 of the same files")
        let tarFile = scratch.appendingPathComponent("baseline.tar.zst")
        let files = ["snapshots/\(tag)"] + [metadata.kernel, metadata.initrd, metadata.rootfs].map { "blobs/sha256/\($0.hex)" }
        let tarStart = Date()
        try ExternalCommand("tar", ["-C", home.root.path, "-I", "zstd -3 -T0", "-cf", tarFile.path] + files).check()
        let tarSeconds = Date().timeIntervalSince(tarStart)
        let tarBytes = try FileSystem.status(of: tarFile)?.size ?? 0

        progress("clade unpack into an empty store")
        let receiver = CladeHome(root: scratch.appendingPathComponent("receiver"))
        let unpackStart = Date()
        _ = try Unpacker(home: receiver, disks: disks).unpack(layout: layout)
        let unpackSeconds = Date().timeIntervalSince(unpackStart)

        progress("tar -x of the baseline")
        let extracted = scratch.appendingPathComponent("extracted")
        try FileManager.default.createDirectory(at: extracted, withIntermediateDirectories: true)
        let untarStart = Date()
        try ExternalCommand("tar", ["-C", extracted.path, "-I", "zstd -T0", "-xf", tarFile.path]).check()
        let untarSeconds = Date().timeIntervalSince(untarStart)

        progress("packing a sibling branch into the parent's layout")
        guard let child = try await forks.fork(tag: tag, count: 1).first?.record else {
            throw EngineError.guestFailed("the benchmark fork failed; see `clade fork \(tag)` for the reason")
        }
        let branchPack: PackReport
        do {
            _ = try await sandboxes.exec(id: child.id, argv: ["sh", "-c", "echo sibling > /root/sibling && sync"], timeout: 120)
            let branchTag = "\(tag)-sibling"
            _ = try await branches.branch(id: child.id, tag: branchTag, mode: .diff)
            branchPack = try Packer(home: home).pack(tag: branchTag, into: layout)
            try? await sandboxes.kill(id: child.id)
        } catch {
            try? await sandboxes.kill(id: child.id)
            throw error
        }

        let memory = packed.pieces.filter { $0.kind == "memory" }.reduce(Int64(0)) { $0 + $1.packedBytes }
        let memoryCompression = memory > 0 ? Double(metadata.memory.logicalSize) / Double(memory) : 0
        let ratios: [String: Double] = [
            "memory_compression (target >= 33)": memoryCompression,
            "pack_throughput_vs_tar_zstd (target >= 1.0)": packSeconds > 0 ? tarSeconds / packSeconds : 0,
            "unpack_throughput_vs_untar_zstd (target >= 1.0)": unpackSeconds > 0 ? untarSeconds / unpackSeconds : 0,
            "pack_size_vs_tar_zstd (lower is smaller)": tarBytes > 0 ? Double(packed.packedBytes) / Double(tarBytes) : 0,
            "sibling_branch_new_bytes_fraction (target <= 0.10)": packed.packedBytes > 0 ? Double(branchPack.newBytes) / Double(packed.packedBytes) : 0,
        ]
        return PackBenchReport(
            memoryMiB: memoryMiB, packSeconds: packSeconds, packBytes: packed.packedBytes, unpackSeconds: unpackSeconds,
            tarSeconds: tarSeconds, tarBytes: tarBytes, untarSeconds: untarSeconds, memoryCompression: memoryCompression,
            branchNewBytes: branchPack.newBytes, ratios: ratios)
    }
}
