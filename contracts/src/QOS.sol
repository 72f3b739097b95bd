// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "./Ownable.sol";
import {IQOS} from "./Interfaces.sol";

/// @notice Quality of service: per node the last 3 task scores (a ring) and a lifetime sum/count.
/// A task score is commitPlaceScore + disclosePlaceScore with place scores [10, 9, 6] (12..20, 0 if the node
/// submitted nothing). Selection weight = lifetime average (20 before the first task, at least 1).
/// Kick-out: sum of the last 3 scores, missing slots counting 20, <= kickoutThreshold (20).
contract QOS is Ownable, IQOS {
    uint256 public constant MAX_TASK_SCORE = 20;
    uint256 public constant NEW_NODE_WEIGHT = 20;

    struct Score {
        uint8 s0;
        uint8 s1;
        uint8 s2;
        uint8 recentCount; // filled slots of the ring, 0..3
        uint8 next; // ring position written next
        uint64 count; // lifetime number of recorded tasks
        uint64 sum; // lifetime sum of task scores
    }

    mapping(address => Score) private scores;
    address public nodeContract;
    uint256 public kickoutThreshold = 20;

    event KickoutThresholdUpdated(uint256 threshold);

    function setNodeContract(address node) external onlyOwner {
        if (nodeContract != address(0)) revert AlreadySet();
        if (node == address(0)) revert ZeroAddress();
        nodeContract = node;
    }

    function setKickoutThreshold(uint256 threshold) external onlyOwner {
        kickoutThreshold = threshold;
        emit KickoutThresholdUpdated(threshold);
    }

    function recordTask(address node, uint256 score) external returns (bool kick, uint256 weight) {
        if (msg.sender != nodeContract) revert Unauthorized();
        Score memory s = scores[node];
        uint8 v = uint8(score);
        if (s.next == 0) s.s0 = v;
        else if (s.next == 1) s.s1 = v;
        else s.s2 = v;
        s.next = s.next == 2 ? 0 : s.next + 1;
        if (s.recentCount < 3) s.recentCount++;
        s.count++;
        s.sum += uint64(score);
        scores[node] = s;
        kick = _recentSum(s) <= kickoutThreshold;
        weight = _weight(s);
    }

    function resetRecent(address node) external {
        if (msg.sender != nodeContract) revert Unauthorized();
        Score storage s = scores[node];
        s.recentCount = 0;
        s.next = 0;
    }

    function weightOf(address node) external view returns (uint256) {
        return _weight(scores[node]);
    }

    /// Lifetime average task score (20 for a node without tasks).
    function averageScore(address node) external view returns (uint256) {
        Score memory s = scores[node];
        return s.count == 0 ? NEW_NODE_WEIGHT : s.sum / s.count;
    }

    /// The kick-out sum: the last (up to) 3 task scores, missing slots counting 20.
    function recentScoreSum(address node) external view returns (uint256) {
        return _recentSum(scores[node]);
    }

    function getScore(address node)
        external
        view
        returns (uint256[3] memory ring, uint256 recentCount, uint256 count, uint256 sum)
    {
        Score memory s = scores[node];
        ring = [uint256(s.s0), uint256(s.s1), uint256(s.s2)];
        return (ring, s.recentCount, s.count, s.sum);
    }

    function _recentSum(Score memory s) private pure returns (uint256 total) {
        // The ring is written at 0, 1, 2, 0, ... so the first `recentCount` slots are the filled ones.
        uint256 n = s.recentCount;
        if (n > 0) total += s.s0;
        if (n > 1) total += s.s1;
        if (n > 2) total += s.s2;
        total += (3 - n) * MAX_TASK_SCORE;
    }

    function _weight(Score memory s) private pure returns (uint256 w) {
        if (s.count == 0) return NEW_NODE_WEIGHT;
        w = s.sum / s.count;
        if (w == 0) w = 1;
    }
}
