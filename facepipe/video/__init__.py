"""Video, cameras and streams: detect every Nth frame, track faces between, name each track once.

    import facepipe
    from facepipe.video import identify_video, VideoOptions

    with facepipe.open() as fp, identify_video(fp, "door.mp4", VideoOptions(every=3)) as run:
        for track in run:                      # one TrackRecord per person on screen, as tracks end
            print(track.to_json())
"""
from facepipe.video.identify import TrackRecord, VideoOptions, VideoRun, identify_video
from facepipe.video.source import VideoError, is_video_source

__all__ = ["TrackRecord", "VideoError", "VideoOptions", "VideoRun", "identify_video", "is_video_source"]
