import CladeModel
import CladeStore
import Foundation

/// The memory a fresh fork of a snapshot touches in its first moments, in pack chunks: recorded
/// once on the host that baked it (`clade record-working-set`), carried in the pack, and fetched
/// in parallel and pushed into the page cache before a lazy fork's children resume.
///
/// It travels as the manifest annotation `org.clade.memory.working-set` (chunk numbers as
/// ranges, `0-5,9,12-40`): a reader that does not know it ignores it, and it needs no blob of its
/// own, so a lazy pull has it with the manifest at no extra round trip.
public struct WorkingSet: Codable, Sendable, Equatable {
    public static let fileName = "working-set.json"
    /// Longest annotation a reader accepts (about 30,000 separate chunks).
    static let maxEncodedBytes = 256 << 10

    /// Chunk size the chunk numbers count in (the pack's memory chunk size).
    public var chunkSize: Int64
    /// Chunk numbers (offset / chunk size), ascending, distinct.
    public var chunks: [Int64]
    /// When and how it was recorded, for people.
    public var recordedAt: Date?
    public var recordedBy: String?

    public init(chunkSize: Int64, chunks: [Int64], recordedAt: Date? = nil, recordedBy: String? = nil) {
        self.chunkSize = chunkSize
        self.chunks = Array(Set(chunks)).sorted()
        self.recordedAt = recordedAt
        self.recordedBy = recordedBy
    }

    /// `0-5,9,12-40`.
    public var encoded: String {
        var parts: [String] = []
        var index = 0
        while index < chunks.count {
            var end = index
            while end + 1 < chunks.count, chunks[end + 1] == chunks[end] + 1 { end += 1 }
            parts.append(end == index ? "\(chunks[index])" : "\(chunks[index])-\(chunks[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }

    /// Parses an annotation, bounded: at most `maxChunks` chunk numbers, each below `chunkLimit`.
    public init(encoded text: String, chunkSize: Int64, chunkLimit: Int64, what: String) throws {
        guard text.utf8.count <= Self.maxEncodedBytes else {
            throw PackError.malformed(what: what, reason: "the working set is \(text.utf8.count) bytes, more than \(Self.maxEncodedBytes)")
        }
        var numbers = Set<Int64>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) where !text.isEmpty {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let first = Int64(bounds[0]), let last = Int64(bounds[bounds.count - 1]),
                first >= 0, first <= last, last < chunkLimit, Int64(numbers.count) + (last - first) < Int64(LazyFilePlan.maxChunks)
            else {
                throw PackError.malformed(what: what, reason: "working-set range '\(part.prefix(40))' is not N or N-M of chunk numbers below \(chunkLimit)")
            }
            for number in first...last { numbers.insert(number) }
        }
        self.init(chunkSize: chunkSize, chunks: Array(numbers))
    }

    /// The recording in a snapshot directory, if any.
    public static func load(in snapshotDirectory: URL) throws -> WorkingSet? {
        try JSONFiles.read(WorkingSet.self, from: snapshotDirectory.appendingPathComponent(fileName, isDirectory: false))
    }

    public func save(in snapshotDirectory: URL) throws {
        try JSONFiles.write(self, to: snapshotDirectory.appendingPathComponent(Self.fileName, isDirectory: false))
    }
}
